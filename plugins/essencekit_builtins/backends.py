"""The built-in compute backends: cpu, cuda and mps, and their device policy.

torch is imported inside the methods, when a backend is probed or used: registering the
backends (every command does) must not cost torch's import (a second or more).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys

import essencekit
from essencekit import Backend
from essencekit.backends import FALLBACK_BUDGET, GIB

#: A GPU's memory budget is capped here (extract keeps within 20 GiB on a GPU, docs/extract.md).
GPU_BUDGET_CAP = 16 * GIB

ENV_MALLOC_TUNING = "ESSENCEKIT_CPU_MALLOC_TUNING"
# glibc's mallopt() parameters (<malloc.h>) and the values the CPU backend sets.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
MALLOC_SETTINGS = (
    (M_MMAP_MAX, 0),  # no mmap: large blocks come from the heap and are reused
    (M_TRIM_THRESHOLD, -1),  # -1: never give freed heap memory back to the system
    (M_TOP_PAD, 64 << 20),  # grow the heap 64 MiB beyond each request (fewer brk calls)
)
_malloc_tuned = False


def tune_malloc() -> bool:
    """Opt-in (``ESSENCEKIT_CPU_MALLOC_TUNING=1``): make glibc's malloc keep and reuse large
    blocks (Linux with glibc only; once per process). Returns whether the settings are in effect.

    Why: by default glibc serves every allocation above 32 MiB with a fresh ``mmap`` and
    unmaps it on free, so each large tensor of a StyleGAN2 pass is page-faulted (and zeroed by
    the kernel) again. With mmap off and no trimming, freed blocks are reused from the heap.
    Measured on a 2-core Xeon, 1024 px, forward + backward at batch 4 (grouped form, with
    essencekit's huge pages): 11.9 s instead of 14.8 s, but 6.1 instead of 4.7 GiB peak.

    Why not by default: the heap never shrinks and fragments. The reference form's forward
    pass (10.5 GiB peak with the default malloc) ran out of 24 GB with these settings. Only
    worth it with memory to spare; the process keeps its peak heap until it exits.
    """
    global _malloc_tuned
    if _malloc_tuned:
        return True
    if os.environ.get(ENV_MALLOC_TUNING, "0").strip().lower() not in ("1", "true", "yes", "on"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return False
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (AttributeError, OSError, ValueError):  # not glibc (e.g. musl), or no such library
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _malloc_tuned = all([mallopt(param, value) == 1 for param, value in MALLOC_SETTINGS])
    return _malloc_tuned


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, as taskset and Slurm set it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


class CPUBackend(Backend):
    """The CPU in float32.

    :meth:`prepare` also tunes glibc's malloc for large tensors when
    ``ESSENCEKIT_CPU_MALLOC_TUNING=1`` (see :func:`tune_malloc`).
    """

    name = "cpu"
    description = "the CPU, float32"
    priority = 0
    # one image at a time is fastest: measured at 1024 px on 2 cores, batches of 4 ran at 0.83x
    # the speed with twice the peak memory (glibc hands each large feature map back to the
    # kernel and faults it in again, and that cost grows with the tensors; docs/transfer.md)
    max_batch = 1
    # grouped convolutions are fast here: the StyleGAN2 generator's grouped modulated
    # convolution measured 15.9 s and 4.7 GiB against the shared form's 18.4 s and 8.4 GiB
    # (fwd+bwd at 1024 px, batch 4, 2-core x86; docs/performance.md)
    fast_grouped_conv = True

    def availability(self):
        return True, ""

    def io_workers(self):
        # no threads: they would take cores from the models, which already use them all
        return 0, 0

    def compute_threads(self, io_threads):
        # readers and writers asked for (workers=N) share the cores with torch's threads: an
        # intra-op region waits for its slowest thread, so one descheduled by an I/O thread
        # holds up the whole pass; the models keep the cores the I/O threads leave
        if io_threads <= 0:
            return None
        import torch

        return max(1, torch.get_num_threads() - io_threads)

    @contextlib.contextmanager
    def inference_session(self, io_threads=0):
        # freed feature maps kept for the next photo instead of faulted in again (malloc.py)
        from .malloc import reuse_freed_blocks

        with super().inference_session(io_threads), reuse_freed_blocks():
            yield

    def threads_per_process(self, local_processes):
        # torchrun's processes on one machine share its cores: each takes an equal part, as one
        # process with every core is what each would otherwise assume
        return max(1, usable_cores() // max(1, local_processes))

    @property
    def device(self):
        import torch

        return torch.device("cpu")

    def prepare(self, model):
        tune_malloc()
        return super().prepare(model)


class CUDABackend(Backend):
    name = "cuda"
    description = "NVIDIA GPUs through CUDA, bf16 autocast (fp16 on GPUs without bf16), TF32 matmuls"
    priority = 30
    channels_last = True  # tensor cores read NHWC; convolutions skip a layout copy
    process_group_backend = "nccl"
    device_per_process = True  # torchrun's process LOCAL_RANK computes on cuda:LOCAL_RANK

    def memory_budget(self):
        import torch

        try:
            free, _ = torch.cuda.mem_get_info(self.device)
            return int(min(free * 0.6, GPU_BUDGET_CAP))
        except RuntimeError:
            return FALLBACK_BUDGET

    def availability(self):
        import torch

        if torch.version.cuda is None:
            return False, f"this torch build ({torch.__version__}) has no CUDA support"
        if not torch.cuda.is_available():
            return False, "no CUDA device is visible (check the NVIDIA driver and CUDA_VISIBLE_DEVICES)"
        return True, ""

    @property
    def device(self):
        import torch

        return torch.device("cuda")

    @property
    def autocast_dtype(self):
        import torch

        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def prepare(self, model):
        # TF32 keeps fp32 range with tensor-core speed (convolutions use it by default);
        # the goldens are checked on the CPU in full fp32
        import torch

        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.benchmark = True
        return super().prepare(model)

    def synchronize(self):
        import torch

        torch.cuda.synchronize()

    def peak_memory(self):
        import torch

        return torch.cuda.max_memory_allocated()

    def reset_peak_memory(self):
        import torch

        torch.cuda.reset_peak_memory_stats()


class MPSBackend(Backend):
    name = "mps"
    description = "Apple-silicon GPUs through Metal (MPS), fp16 autocast"
    priority = 20
    # keeps the StyleGAN2 generator on its shared-weight modulated convolution (one ordinary
    # convolution per layer), the form essencekit has always run on MPS; unmeasured, as no
    # Apple machine runs the benchmarks
    fast_grouped_conv = False

    def memory_budget(self):
        import torch

        try:
            return int(min(torch.mps.recommended_max_memory() * 0.4, GPU_BUDGET_CAP))
        except (AttributeError, RuntimeError):
            return FALLBACK_BUDGET

    def availability(self):
        import torch

        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_built():
            return False, f"this torch build ({torch.__version__}) has no MPS support (Apple silicon, macOS only)"
        if not mps.is_available():
            return False, "MPS is built in but unavailable (needs macOS 12.3+ on Apple silicon)"
        return True, ""

    @property
    def device(self):
        import torch

        return torch.device("mps")

    @property
    def autocast_dtype(self):
        # bf16 autocast on MPS needs macOS 14 and is slower than fp16 where it works
        import torch

        return torch.float16

    def synchronize(self):
        import torch

        torch.mps.synchronize()

    def peak_memory(self):
        import torch

        return torch.mps.driver_allocated_memory()


@essencekit.hookimpl
def register_backends(register):
    register(CPUBackend())
    register(CUDABackend())
    register(MPSBackend())
