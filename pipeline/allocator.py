"""Keep freed memory in the process rather than giving it back to the kernel at every free (glibc).

glibc serves blocks over 128 KiB with mmap and unmaps them when freed, so a loop that frees and
allocates the same large tensors every step (DPO's logits, a sampling batch) has the kernel fault
fresh zeroed pages in each time. 20 lyrics DPO steps on 2 cores trained in 18.2 s, 15.8 s of it
kernel CPU; kept in the heap, 10.1 s and 1.3 s, the same losses (benchmarks/allocator_dpo.py).
Every thread allocates from that one heap (one arena): a thread's own arena, as glibc gives the
worker threads that build a round's shards, still gave its memory back, and DPO in a round trained
at 1.0 s a step instead of 0.55 (README, alignment science).
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX, M_ARENA_MAX = -1, -2, -4, -8  # glibc's mallopt parameters (malloc.h)
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Serve every block, in every thread, from the one heap and keep up to 1 GiB of freed memory at
    its top, for the rest of this process; once per process, before the threads that allocate start.
    False where the C library is not glibc (nothing changes)."""
    global _applied
    if _applied is None:
        _applied = False
        if sys.platform.startswith("linux"):
            try:
                mallopt = ctypes.CDLL("libc.so.6").mallopt
            except (OSError, AttributeError):
                return False
            settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 1 << 30), (M_TOP_PAD, 64 << 20))
            _applied = all(mallopt(option, value) == 1 for option, value in settings)
    return _applied
