"""Process-level performance settings: allocator, threads, device, bf16 support.

glibc's default returns every >= 128 KiB temporary to the OS, so each step would re-fault its score
buffers; the mallopt settings below keep them.  bf16 GEMMs can be much faster than fp32 only where the CPU has
native bf16 (avx512_bf16 / amx_bf16); elsewhere bf16 is emulated and slower.  Even a native flag does not
promise a faster GEMM (on an Intel VM with AVX512-BF16 but no AMX torch's bf16 kernels ran slower than
fp32), so ``cpu_bf16: auto`` uses bf16 only on the CPUs where it was measured faster.  The measurements
behind these choices are in docs/benchmarks.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import mmap
import os
from collections.abc import Iterator

import numpy as np
import torch

from tbg.config import Config
from tbg.model.lr_scaling import effective_batch

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc, found once: ``find_library`` runs ``ldconfig -p`` in a subprocess on every call."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def tune_malloc() -> bool:
    """Keep large temporaries in the heap (32 MiB mmap threshold, 1 GiB trim, 256 MiB top pad), in one arena.

    One arena: with the trim threshold raised, every thread's arena keeps its own peak of step scratch, so
    peak RSS grows with the Hogwild workers for no speed (a step makes few, large allocations, so the shared
    arena's lock is cheap)."""
    libc = _libc()
    if libc is None:
        return False
    try:
        ok = libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
        ok &= libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
        ok &= libc.mallopt(M_TOP_PAD, 256 << 20)
        ok &= libc.mallopt(M_ARENA_MAX, 1)
        return bool(ok)
    except (OSError, AttributeError):
        return False


def resident_bytes() -> int:
    """This process's resident set size now (``/proc/self/statm``; 0 where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * mmap.PAGESIZE
    except (OSError, ValueError, IndexError):
        return 0


def trim_heap(above: int = 0) -> None:
    """Give the heap's free memory back to the OS (``malloc_trim``) when the resident set exceeds ``above``
    bytes: with the raised trim threshold glibc keeps it, and buckets of varying sizes fragment it.  A trim
    also returns the step scratch, which the next steps fault in again, so a budgeted run trims at a bucket
    change only once its RSS nears the budget plus the fixed overhead."""
    if above and resident_bytes() <= above:
        return
    libc = _libc()
    try:
        if libc is not None:
            libc.malloc_trim(ctypes.c_size_t(0))
    except AttributeError:
        pass


MADV_HUGEPAGE = 14
_HUGE = 2 << 20


def hugepage_empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised CPU tensor whose pages are advised as transparent huge pages.

    Gathers and row updates hit random rows of tables and optimizer state that are much larger than the
    caches; with 4 KiB pages most of them also miss the TLB.  THP is commonly ``madvise``-only, so the big
    buffers ask for it before they are first touched.  Big buffers are anonymous mappings of their own
    (:func:`hugepage_array`): aligned, and given back to the OS when freed, so tables swapped in and out never
    fragment the heap (whose freed blocks glibc keeps, see :func:`tune_malloc`).
    """
    np_dtype = _NUMPY_DTYPES.get(dtype)
    if np_dtype is not None:
        return torch.from_numpy(hugepage_array(shape, np_dtype))
    out = torch.empty(shape, dtype=dtype)
    _advise_huge(out.data_ptr(), out.nbytes)
    return out


_NUMPY_DTYPES = {torch.float32: np.float32, torch.float16: np.float16, torch.float64: np.float64}


def hugepage_array(shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """:func:`hugepage_empty` as a numpy array: numpy, mmap and ctypes only, so the partition I/O thread may call
    it (a torch op there would give that thread its own OpenMP team); ``torch.from_numpy`` adopts it for free.
    Arrays of 8 MiB and more get an anonymous mapping of their own, 2 MiB-aligned (zero-filled)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes < 4 * _HUGE:
        return np.empty(shape, dtype=dtype)
    mm = mmap.mmap(-1, nbytes + _HUGE)
    raw = np.frombuffer(mm, dtype=np.uint8)
    skip = (-raw.ctypes.data) % _HUGE
    out = raw[skip : skip + nbytes].view(dtype).reshape(shape)
    _advise_huge(out.ctypes.data, nbytes)
    return out


def _advise_huge(ptr: int, nbytes: int) -> None:
    if nbytes < 4 * _HUGE:
        return
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None:
            start = (ptr + _HUGE - 1) & ~(_HUGE - 1)
            end = (ptr + nbytes) & ~(_HUGE - 1)
            if end > start:
                libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), MADV_HUGEPAGE)
    except (OSError, AttributeError):
        pass


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: taskset, cpusets), not every CPU of the host."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def cpu_threads(cfg: Config) -> int:
    """``runtime.num_threads``, else every usable CPU."""
    return cfg.runtime.num_threads or usable_cpus()


def _cpuinfo() -> tuple[str, set[str]]:
    """(vendor_id, flags) of the first CPU in /proc/cpuinfo ("", set() where there is none)."""
    vendor, flags = "", set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("vendor_id") and not vendor:
                    vendor = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return vendor, flags


def cpu_bf16_pays() -> bool:
    """Whether bf16 score products beat fp32 on this CPU: AMX, or AVX512-BF16 on AMD.  Decided from the CPU's
    identity, not timed, so two runs on one machine always take the same path (timing under load would flip
    it and change the numbers).  Intel with AVX512-BF16 but no AMX stays on fp32: measured slower there."""
    vendor, flags = _cpuinfo()
    return "amx_bf16" in flags or ("avx512_bf16" in flags and vendor == "AuthenticAMD")


def select_device(cfg: Config) -> torch.device:
    want = cfg.runtime.device
    if want == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if want.startswith("cuda") and not torch.cuda.is_available():
        from tbg.errors import TbgError

        raise TbgError(f"runtime.device: {want!r} requested but CUDA is not available")
    return torch.device(want)


def use_bf16(cfg: Config, device: torch.device) -> bool:
    """bf16 score GEMMs: on CUDA when enable_amp; on CPU per runtime.cpu_bf16 (``auto``: :func:`cpu_bf16_pays`)."""
    if device.type == "cuda":
        return cfg.runtime.enable_amp
    mode = cfg.runtime.cpu_bf16
    if mode != "auto":
        return mode == "on"
    return cpu_bf16_pays()


AUTO_MAX_WORKERS = 4
AUTO_MAX_HOGWILD_BATCH = 10_000  # auto: one worker above this many edges per update (docs/training.md)


def hogwild_workers(cfg: Config, device: torch.device) -> tuple[int, int]:
    """(training workers, intra-op threads per worker) for ``runtime.hogwild_workers``.

    Whole steps side by side, one intra-op thread each, beat one worker using every thread, because a step's
    many small operations do not split well across threads (each pays a barrier; docs/benchmarks.md).
    Workers are threads sharing the tables, so memory does not grow with them; they contend for the GIL
    between operations, which is why auto stops at 4 (a reasoned limit, not measured).

    Lock-free steps assume that concurrent updates rarely touch the same rows: above
    :data:`AUTO_MAX_HOGWILD_BATCH` edges per update (a 100k batch touches most of WordNet's rows) two workers'
    stale full-size steps stack on nearly every row and training collapsed, so auto runs one worker there.

    CUDA: one worker (a step is one stream of kernels; threads would only interleave launches).  Several
    workers asked for with ``device: auto`` mean "on a CPU host": on a GPU host they are not an error.
    """
    threads = cpu_threads(cfg)
    want = cfg.runtime.hogwild_workers
    if device.type != "cpu":
        if want is not None and want > 1 and cfg.runtime.device != "auto":
            from tbg.errors import TbgError

            raise TbgError(f"runtime.hogwild_workers: {want} workers need device cpu, got {device}")
        return 1, threads
    if want is None:
        want = 1 if effective_batch(cfg) > AUTO_MAX_HOGWILD_BATCH else max(1, min(threads, AUTO_MAX_WORKERS))
    return want, max(1, threads // want)


def setup(cfg: Config) -> tuple[torch.device, bool]:
    """Apply allocator/thread settings; return the device and whether score GEMMs use bf16.

    TF32 is not set here (it is process-wide): training steps scope it with :func:`tf32`."""
    tune_malloc()
    threads = cpu_threads(cfg)
    torch.set_num_threads(threads)
    device = select_device(cfg)
    return device, use_bf16(cfg, device)


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """CUDA matmuls in TF32 while inside (``runtime.enable_tensorfloat32`` for training steps), restored after,
    so evaluation and validation ranking in the same process keep full fp32 products."""
    if not enabled:
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
