"""glibc's malloc made to keep and reuse freed blocks for the length of a block of code.

Why (measured on a 2-core Xeon, 1024 px, batch 1, docs/performance.md): with torch's huge
pages on, a synthesis pass right after an e4e pass spent 1.3 to 1.7 s in the kernel (18 000
page faults, the cores partly idle while one thread faulted) against 0.3 s for the same pass
after another synthesis: freed feature maps go back to the kernel and every pass faults them in
again, and how expensive that is depends on what ran before. With freed blocks kept (no mmap
for large blocks, no trimming) a transfer run's synthesis faults nothing after its first photo,
and takes what it takes alone.

Why only for a block: the heap then never shrinks and can fragment (an extraction's
forward + backward passes at batch 4 ran out of 24 GB this way). A transfer or invert run at the
CPU's batch of 1 peaks about as high with it as without (docs/performance.md); when the block
ends, glibc's default limits come back and the kept memory is returned to the system.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading

from .backends import M_MMAP_MAX, M_TOP_PAD, M_TRIM_THRESHOLD, MALLOC_SETTINGS, tune_malloc

# glibc's documented defaults (mallopt(3)), restored when the last block ends
DEFAULTS = ((M_MMAP_MAX, 65536), (M_TRIM_THRESHOLD, 128 * 1024), (M_TOP_PAD, 128 * 1024))

_lock = threading.Lock()
_depth = 0


def _libc():
    """glibc's C library, or ``None`` (not Linux, or another C library such as musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return None
        libc = ctypes.CDLL("libc.so.6")
    except (AttributeError, OSError, ValueError):
        return None
    libc.mallopt.argtypes, libc.mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    libc.malloc_trim.argtypes, libc.malloc_trim.restype = (ctypes.c_size_t,), ctypes.c_int
    return libc


def _apply(libc, settings) -> bool:
    return all([libc.mallopt(param, value) == 1 for param, value in settings])


@contextlib.contextmanager
def reuse_freed_blocks():
    """Within the block, glibc keeps freed memory and reuses it (nested blocks and threads
    share one setting; the last to leave restores the defaults and trims the heap). Does
    nothing off glibc, or where ``ESSENCEKIT_CPU_MALLOC_TUNING=1`` keeps the setting for the
    whole process already."""
    global _depth
    libc = None if tune_malloc() else _libc()
    if libc is None:
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            _apply(libc, MALLOC_SETTINGS)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _apply(libc, DEFAULTS)
                libc.malloc_trim(0)


def reusing() -> bool:
    """Whether a :func:`reuse_freed_blocks` block is open."""
    return _depth > 0
