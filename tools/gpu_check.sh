#!/usr/bin/env bash
# GPU checks for the trainer, for a machine with CUDA: GPU-marked tests, then the WordNet training benchmark
# on the GPU (P=1 fp32, P=1 with enable_amp/bf16, P=4), then 2-epoch CPU runs with 1, 2, 4, 8 and all-core
# Hogwild workers, printed as a table.  Usage: tools/gpu_check.sh
# The device machine has no network: carry data/wordnet/{train,valid,test}.tsv (built here by
# tools/build_wordnet.py, ~12 MB) with the working tree.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device")'
python -m pytest -m gpu -q tests
python - <<'PY'
import json, os, subprocess, sys
sys.path.insert(0, "tools/bench")
import train_bench as tb
tb.ensure_data()
ref = {"runtime.device": "cuda"}  # configs/wordnet.yaml as written, like the CPU ref_p1/ref_p4 variants
tb.VARIANTS.update({"gpu_p1": ref, "gpu_p1_amp": {**ref, "runtime.enable_amp": True},
                    "gpu_p4": {**ref, "partitions": 4}})
rows = [tb.run_one(v, None, None) for v in ("gpu_p1", "gpu_p1_amp", "gpu_p4")]
# the machine's CPU cores: Hogwild workers vs intra-op threads (2 epochs each), to check the auto cap of 4
# workers (tbg/runtime.py), which was only measured on 2 cores
cores = os.cpu_count() or 1
for w in sorted({1, 2, 4, 8, cores} & set(range(1, cores + 1))):
    tb.VARIANTS[f"cpu_w{w}"] = {"runtime.device": "cpu", "runtime.hogwild_workers": w}
    rows.append(tb.run_one(f"cpu_w{w}", None, 2))
cols = ["variant", "partitions", "epochs", "edges_per_s", "train_s", "peak_rss_mb", "final_loss", "filtered_mrr",
        "hits@10"]
print(" | ".join(cols))
for r in rows:
    print(" | ".join(f"{r.get(c):.4g}" if isinstance(r.get(c), float) else str(r.get(c)) for c in cols))
print(json.dumps(rows))
PY
