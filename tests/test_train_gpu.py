"""CUDA training (run by tools/gpu_check.sh on a GPU machine; skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch
from builders import make_config, planted_graph
from readback import rank_quality

pytestmark = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@needs_cuda
@pytest.mark.parametrize("amp", [False, True])
@pytest.mark.parametrize("parts", [1, 4])
def test_cuda_training_learns_and_checkpoints(tmp_path, amp: bool, parts: int) -> None:
    from tbg.train.trainer import Trainer

    gdir = str(tmp_path / "g")
    splits, _ = planted_graph(make_config(gdir, partitions=parts))
    cfg = make_config(
        gdir,
        save_dir=str(tmp_path / "run"),
        partitions=parts,
        overrides={"runtime.device": "cuda", "runtime.enable_amp": amp, "training.num_epochs": 6},
    )
    trainer = Trainer(cfg, progress=False)
    trainer.start()
    assert trainer.device.type == "cuda" and trainer.bf16 == amp
    summary = trainer.run()
    assert summary["device"].startswith("cuda") and summary["epoch"] == 6
    quality = rank_quality(cfg, splits["test"])  # evaluated on CPU in fp32 from the checkpoint
    assert quality["auc"] > 0.85, quality
