#!/usr/bin/env bash
# GPU checks for the trainer on a CUDA machine with no network; everything it needs travels with the tree.
#   tools/gpu_check.sh            (PYTHON=/path/to/python3 to pick the interpreter; default python3)
# 1. installs cattrs (+ attrs, typing_extensions) from tools/wheels/ when the machine lacks it (pure-Python
#    wheels; the rest of tbg's dependencies, numpy, h5py, pyyaml, pyarrow, fsspec, tqdm, pytest, must be there);
# 2. the GPU-marked tests, each file in its own process: CUDA training, one training step on CPU vs CUDA
#    (fp32, same negatives: loss and rows within 1e-5), no sync in 10 steps under
#    torch.cuda.set_sync_debug_mode("warn"), TF32 scoped to steps, pinned staging;
# 3. the WordNet reference config on CUDA at batch 1k / 10k / 100k, each variant in its own process
#    (tools/bench/train_bench.py), under set_sync_debug_mode("warn") with the warnings counted, then one table:
#    edges/s, filtered MRR, GPU eval seconds.
# Carry the WordNet split with the tree: data/wordnet/{train,valid,test}.tsv (tools/build_wordnet.py, ~9 MB)
# (the variants import it into runs/bench/graph_p1 on first use).
# Sized for one 10-minute run on one GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# GPU_CHECK_DRY=1: skip the CUDA check and the tests (a CPU dry run of the rest, with
# GPU_CHECK_VARIANTS=ref_p1 GPU_CHECK_EPOCHS=1 and no sync counting)
DRY="${GPU_CHECK_DRY:-0}"
[[ "$DRY" == 1 ]] || "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "gpu_check: no CUDA device")'
# cattrs (and the attrs/typing_extensions it needs) is what a GPU image usually lacks: its wheels are in
# tools/wheels and go into runs/gpu_site (first on PYTHONPATH), leaving the interpreter's own site alone
SITE="$PWD/runs/gpu_site"
export PYTHONPATH="$SITE:$PYTHONPATH"
if ! "$PY" -c 'import cattrs' 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" tools/wheels/*.whl
  echo "gpu_check: installed $(ls tools/wheels) into runs/gpu_site" >&2
fi
"$PY" -c 'import attrs, cattrs, numpy, h5py, yaml, pyarrow, fsspec, tqdm, pytest' \
  || { echo "gpu_check: a dependency above is missing: pip download its wheel into tools/wheels" >&2; exit 2; }
status=0
[[ "$DRY" == 1 ]] || for f in tests/test_train_gpu.py; do
  "$PY" -m pytest -q -p no:cacheprovider -m gpu "$f" || status=1
done
"$PY" - <<'PY'
import json, os, subprocess, sys


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


rows = []
epochs = os.environ.get("GPU_CHECK_EPOCHS") or None
debug = "torch.cuda.set_sync_debug_mode('warn');" if torch_cuda() else ""
for variant in os.environ.get("GPU_CHECK_VARIANTS", "gpu_b1k,gpu_b10k,gpu_b100k").split(","):
    code = (
        "import json, sys, warnings, torch; sys.path.insert(0, 'tools/bench'); import train_bench as tb;"
        f"{debug}"
        "w = warnings.catch_warnings(record=True); caught = w.__enter__(); warnings.simplefilter('always');"
        f"r = tb.run_one({variant!r}, None, {epochs}); r['sync_warnings'] = len(caught);"
        "print(json.dumps(r))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode:
        rows.append({"variant": variant, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]})
    else:
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
cols = ["variant", "edges_per_s", "train_s", "filtered_mrr", "hits@10", "eval_s", "eval_device", "sync_warnings",
        "peak_rss_mb", "error"]
print(" | ".join(cols))
for r in rows:
    print(" | ".join(f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols))
print(json.dumps(rows))
PY
exit $status
