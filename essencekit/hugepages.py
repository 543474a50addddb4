"""Transparent huge pages for torch's large CPU tensors, requested before torch is imported.

Why: on Linux every large CPU tensor is a fresh ``mmap``; each 4 KiB page of it is faulted in
and zeroed by the kernel when first written and unmapped when the tensor is freed. A StyleGAN2
forward + backward pass at 1024 px allocates and frees tens of gigabytes that way: at batch 4
on a 2-core Xeon the kernel's page-fault time was about as large as the arithmetic. torch's
allocator can ask for 2 MiB pages instead (``madvise(MADV_HUGEPAGE)`` on blocks of 2 MiB and
more, when the system's ``/sys/kernel/mm/transparent_hugepage/enabled`` is ``madvise`` or
``always``): 512 times fewer faults, the same memory. Measured there (benchmarks/generator.py,
grouped form, fwd+bwd batch 4): 21.2 s without, 14.8 s with, 4.7 GiB peak both ways.

torch reads its switch, ``THP_MEM_ALLOC_ENABLE``, once, at its first CPU allocation, so
importing :mod:`essencekit` sets it unless it is already set; it then takes effect when
essencekit is imported before torch (always true for the ``essencekit`` command, which loads
torch only once a command makes a tensor, long after; in your own script, import essencekit
first or set the variable yourself; tests/test_startup.py checks the order). ``THP_MEM_ALLOC_ENABLE=0``
turns it off. No effect off Linux and on GPU memory.
"""

from __future__ import annotations

import os

HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"


def request_huge_pages() -> None:
    """Ask torch's CPU allocator for transparent huge pages unless the user decided already."""
    os.environ.setdefault(HUGE_PAGES_ENV, "1")


def huge_pages_requested() -> bool:
    """Whether torch will madvise its large CPU blocks: it honours exactly ``1`` (it warns
    about and ignores anything but ``0`` and ``1``)."""
    return os.environ.get(HUGE_PAGES_ENV, "").strip() == "1"


SYSTEM_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def huge_pages_status(system_setting: str = SYSTEM_SETTING) -> tuple[bool, str]:
    """Whether torch's large CPU tensors get huge pages in this process, and a one-line why."""
    requested = huge_pages_requested()
    try:
        with open(system_setting) as handle:
            text = handle.read()
        mode = text[text.index("[") + 1 : text.index("]")]
    except (OSError, ValueError):
        return False, "not available on this system (Linux transparent huge pages only)"
    if mode == "always":
        return True, f"on (the system gives them to all large memory: {system_setting}: always)"
    if not requested:
        value = os.environ.get(HUGE_PAGES_ENV)
        return False, f"off: {HUGE_PAGES_ENV} is {value!r}, not '1' (the system allows them: {mode})"
    if mode == "never":
        return False, f"requested, but the system has them off ({system_setting}: never)"
    return True, f"on ({HUGE_PAGES_ENV}=1, system: {mode})"
