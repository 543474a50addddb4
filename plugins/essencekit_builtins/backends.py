"""The built-in compute backends: cpu, cuda and mps."""

from __future__ import annotations

import torch

import essencekit
from essencekit import Backend


class CPUBackend(Backend):
    name = "cpu"
    description = "the CPU, float32"
    priority = 0
    # measured on a 2-core x86 CPU (docs/performance.md): both forms take the same time, but
    # shared keeps more activations for backward (11.3 vs 7.5 GiB at 1024 px, batch 4)
    modulated_conv = "grouped"

    def availability(self):
        return True, ""

    @property
    def device(self):
        return torch.device("cpu")


class CUDABackend(Backend):
    name = "cuda"
    description = "NVIDIA GPUs through CUDA, bf16 autocast (fp16 on GPUs without bf16), TF32 matmuls"
    priority = 30
    modulated_conv = "grouped"

    def availability(self):
        if torch.version.cuda is None:
            return False, f"this torch build ({torch.__version__}) has no CUDA support"
        if not torch.cuda.is_available():
            return False, "no CUDA device is visible (check the NVIDIA driver and CUDA_VISIBLE_DEVICES)"
        return True, ""

    @property
    def device(self):
        return torch.device("cuda")

    @property
    def autocast_dtype(self):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def prepare(self, model):
        # TF32 keeps fp32 range with tensor-core speed (convolutions use it by default);
        # the goldens are checked on the CPU in full fp32
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.benchmark = True
        model = super().prepare(model)
        return model.to(memory_format=torch.channels_last)

    def synchronize(self):
        torch.cuda.synchronize()

    def peak_memory(self):
        return torch.cuda.max_memory_allocated()

    def reset_peak_memory(self):
        torch.cuda.reset_peak_memory_stats()


class MPSBackend(Backend):
    name = "mps"
    description = "Apple-silicon GPUs through Metal (MPS), fp16 autocast"
    priority = 20
    modulated_conv = "shared"

    def availability(self):
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_built():
            return False, f"this torch build ({torch.__version__}) has no MPS support (Apple silicon, macOS only)"
        if not mps.is_available():
            return False, "MPS is built in but unavailable (needs macOS 12.3+ on Apple silicon)"
        return True, ""

    @property
    def device(self):
        return torch.device("mps")

    @property
    def autocast_dtype(self):
        # bf16 autocast on MPS needs macOS 14 and is slower than fp16 where it works
        return torch.float16

    def synchronize(self):
        torch.mps.synchronize()

    def peak_memory(self):
        return torch.mps.driver_allocated_memory()


@essencekit.hookimpl
def register_backends(register):
    register(CPUBackend())
    register(CUDABackend())
    register(MPSBackend())
