"""Rows of one checkpoint embedding shard, read without loading the whole shard when possible.

Checkpoint shards are uncompressed, contiguous HDF5 datasets, so a shard is memory-mapped at the
dataset's file offset and a few thousand rows are gathered in microseconds; a chunked or compressed
dataset (written by other tools) is read whole, once.
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from tbg.errors import CheckpointError


class ShardRows:
    """Float32 rows of the ``embeddings`` dataset of one shard file."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            with h5py.File(path, "r") as f:
                ds = f["embeddings"]
                self.shape: tuple[int, int] = tuple(int(s) for s in ds.shape)  # type: ignore[assignment]
                dtype = ds.dtype
                offset = ds.id.get_offset()
                whole = None
                if offset is None or ds.chunks is not None or ds.compression is not None:
                    whole = np.empty(ds.shape, dtype=np.float32)
                    if ds.size:
                        ds.read_direct(whole)
        except (OSError, KeyError) as exc:
            raise CheckpointError(f"{path}: unreadable embedding shard: {exc}") from None
        if len(self.shape) != 2:
            raise CheckpointError(f"{path}: embeddings have shape {self.shape}, expected [rows, dim]")
        if whole is not None:
            self._data: np.ndarray = whole
        elif self.shape[0] == 0:
            self._data = np.zeros(self.shape, dtype=np.float32)
        else:
            need = int(offset) + self.shape[0] * self.shape[1] * dtype.itemsize
            if os.path.getsize(path) < need:
                raise CheckpointError(f"{path}: truncated embedding shard")
            self._data = np.memmap(path, dtype=dtype, mode="r", offset=int(offset), shape=self.shape)

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def dim(self) -> int:
        return self.shape[1]

    def take(self, offsets: np.ndarray) -> np.ndarray:
        """float32 [len(offsets), dim] rows at ``offsets`` (any order, repeats allowed)."""
        return np.asarray(self._data[np.asarray(offsets, dtype=np.int64)], dtype=np.float32)

    def block(self, start: int, stop: int) -> np.ndarray:
        """float32 rows [start, stop)."""
        return np.array(self._data[start:stop], dtype=np.float32)
