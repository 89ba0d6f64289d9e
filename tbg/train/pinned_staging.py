"""Host -> device copies of a partition through bounded pinned buffers (CUDA; tbg/train/partition_store.py)."""

from __future__ import annotations

import torch

STAGING_BYTES = 64 << 20  # per pinned staging buffer (two of them)


class PinnedStaging:
    """Host -> device copies of any size through two bounded pinned buffers, used in turn.

    Pinning a whole partition would ask the pinned allocator (which rounds up to a power of two) for up to
    twice its size in page-locked memory: a 40 GB partition, 64 GB.  Instead each piece is copied into a free
    staging buffer and sent without blocking; a buffer is refilled only after its previous copy finished
    (an event), so one piece is copied on the host while the other is in flight.
    """

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self._buffers: list[torch.Tensor] = []
        self._events: list[torch.cuda.Event | None] = [None, None]

    def to_device(self, src: torch.Tensor, device: torch.device) -> torch.Tensor:
        src = src.contiguous()
        out = torch.empty(src.shape, dtype=src.dtype, device=device)
        flat, dest = src.view(-1).view(torch.uint8), out.view(-1).view(torch.uint8)
        if not self._buffers:
            self._buffers = [torch.empty(self.nbytes, dtype=torch.uint8, pin_memory=True) for _ in range(2)]
        for i, lo in enumerate(range(0, flat.numel(), self.nbytes)):
            hi = min(flat.numel(), lo + self.nbytes)
            which = i % 2
            event = self._events[which]
            if event is not None:
                event.synchronize()  # the buffer's previous copy has left it
            buf = self._buffers[which][: hi - lo]
            buf.copy_(flat[lo:hi])
            dest[lo:hi].copy_(buf, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._events[which] = event
        return out
