"""Embedding table initialisation, one tensor per entity type × partition.

TwHIN-style U(±sqrt(1/num_embeddings)) (torchrec's default) unless ``init_scale`` is set, then
N(0, init_scale) as in PBG.  Each partition is seeded from (seed, type, partition) so a partition is the
same whether it is created at start or lazily when its bucket first comes up.
"""

from __future__ import annotations

import hashlib

import torch

from tbg.config import DataType, EmbeddingTableConfig


def partition_seed(seed: int, etype: str, part: int) -> int:
    digest = hashlib.sha256(f"{seed}/{etype}/{part}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def storage_dtype(table: EmbeddingTableConfig) -> torch.dtype:
    return torch.float16 if table.data_type == DataType.fp16 else torch.float32


def init_partition(
    table: EmbeddingTableConfig,
    num_embeddings: int,
    rows: int,
    seed: int,
    part: int,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """A fresh [rows, dim] partition of ``table`` (fp16 storage for data_type fp16).

    ``out`` (fp32, e.g. a huge-page buffer) is filled in place, so a new table is never held twice.
    """
    gen = torch.Generator().manual_seed(partition_seed(seed, table.name, part))
    out = torch.empty(rows, table.embedding_dim, dtype=torch.float32) if out is None else out
    if table.init_scale is not None:
        out.normal_(0.0, table.init_scale, generator=gen)
    else:
        bound = (1.0 / max(1, num_embeddings)) ** 0.5
        out.uniform_(-bound, bound, generator=gen)
    return out.to(storage_dtype(table))
