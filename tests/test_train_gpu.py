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


def _one_step(tmp_path, device: str, **over):
    """Loss of the first training step and the table after it (from a checkpoint), on ``device``."""
    from readback import full_table

    from tbg.train.edge_stream import batches
    from tbg.train.trainer import Trainer

    gdir = str(tmp_path / f"g_{device}")
    # in-batch negatives only (chunk scope): the same negatives on every device, no random draw
    keys = {"runtime.device": device, "runtime.enable_amp": False, "runtime.cpu_bf16": "off",
            "train_data.in_batch_scope": "chunk", "train_data.in_batch_negatives": 25,
            "train_data.global_negatives": 0, **over}  # fmt: skip
    cfg = make_config(gdir, save_dir=str(tmp_path / f"run_{device}"), overrides=keys)
    planted_graph(cfg)
    trainer = Trainer(cfg, progress=False)
    trainer.start(fresh=True)
    trainer.store.need(trainer.bucket_keys((0, 0)))
    chunk = next(trainer.edges.chunks(0, (0, 0)))
    batch = next(batches(chunk, cfg.train_data.per_replica_batch_size, 0))[1]
    loss = float(trainer.train_step(batch))
    trainer.checkpoint()
    return loss, full_table(str(tmp_path / f"run_{device}"), gdir)[0]


@needs_cuda
def test_one_step_matches_cpu(tmp_path) -> None:
    """fp32, same batch and negatives: loss and updated rows agree within 1e-5 between CPU and CUDA."""
    cpu_loss, cpu_table = _one_step(tmp_path, "cpu")
    gpu_loss, gpu_table = _one_step(tmp_path, "cuda")
    assert abs(cpu_loss - gpu_loss) <= 1e-5 * max(1.0, abs(cpu_loss))
    assert float(abs(cpu_table - gpu_table).max()) <= 1e-5


@needs_cuda
def test_steps_never_sync_and_tf32_stays_scoped(tmp_path) -> None:
    import warnings

    from tbg.train.edge_stream import batches
    from tbg.train.trainer import Trainer

    over = {"runtime.device": "cuda", "runtime.enable_tensorfloat32": True}
    cfg = make_config(str(tmp_path / "g"), save_dir=str(tmp_path / "run"), overrides=over)
    planted_graph(cfg)
    trainer = Trainer(cfg, progress=False)
    trainer.start(fresh=True)
    trainer.store.need(trainer.bucket_keys((0, 0)))
    work = [b for c in trainer.edges.chunks(0, (0, 0)) for _, b in batches(c, 100, c.start)][:10]
    before = torch.backends.cuda.matmul.allow_tf32
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for b in work:
                trainer.train_step(b)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert [str(w.message) for w in caught] == []
    assert torch.backends.cuda.matmul.allow_tf32 == before  # TF32 only inside the steps


@needs_cuda
def test_pinned_staging_copies_any_size() -> None:
    from tbg.train.partition_store import PinnedStaging

    src = torch.randn(1001, 7)
    out = PinnedStaging(1000).to_device(src, torch.device("cuda"))  # 28 pieces through 2 buffers
    assert torch.equal(out.cpu(), src)
