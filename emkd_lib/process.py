"""Process-wide settings, applied once when a command-line process starts
(``python -m emkd_lib``), never from inside the library's functions."""
from __future__ import annotations

import ctypes

import torch


def keep_freed_cpu_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse; returns whether it could.

    A training step allocates and frees tensors of hundreds of MB (scores over
    the catalogue, their softmax, their gradients). By default glibc serves each
    with a fresh ``mmap`` and unmaps it when freed, so the next step faults in
    and zeroes the same pages again, and a training process can spend a large
    share of its CPU time in the kernel doing this. With ``mmap``
    off and trimming off, freed blocks stay in the heap and the next step
    reuses them. The cost is memory: a process keeps its peak until it exits,
    and the heap fragments (a run can peak at about twice its default
    footprint), so ``EMKD_KEEP_FREED_MEMORY=0`` in the environment
    makes the CLI leave malloc as it is for runs that would not fit. A no-op (``False``)
    there and where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only: other mallocs read mallopt differently
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))



def configure_process(threads: int | None, keep_freed_memory: bool) -> None:
    """torch's CPU thread count and glibc's malloc policy for a training process."""
    if threads:
        torch.set_num_threads(threads)
    if keep_freed_memory:
        keep_freed_cpu_memory()
