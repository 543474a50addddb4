"""The generator's fused ops and the CPU backend's malloc tuning (issue: fwd+bwd speed).

The fused ops are held to the reference implementation's op sequence, which only the
development benchmarks keep (benchmarks/compare/reference_ops.py, on pytest's pythonpath).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from compare.reference_ops import ReferenceModulatedConv2d, use_reference_sequence, uses_reference_sequence

import essencekit_builtins.backends as builtin_backends
from essencekit.models.ops import blur, fused_leaky_relu, make_blur_kernel, noise_bias_leaky_relu_
from essencekit.models.stylegan2 import Generator, ModulatedConv2d, load_generator_checkpoint

TINY = Path(__file__).parent / "fixtures" / "tiny-stylegan2.pt"


def unfused(x, bias, noise, weight):
    """NoiseInjection then FusedLeakyReLU, as the reference implementation computes them."""
    if noise is not None:
        x = x + weight * noise
    return fused_leaky_relu(x, bias)


def operands(dtype=torch.float32, noise_batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 4, 5, 6, generator=g, dtype=dtype)
    bias = torch.randn(4, generator=g, dtype=dtype)
    noise = torch.randn(noise_batch, 1, 5, 6, generator=g, dtype=dtype)
    weight = torch.randn(1, generator=g, dtype=dtype)
    return x, bias, noise, weight


def value_and_grads(fn, x, bias, noise, weight, probe):
    leaves = [t.clone().requires_grad_(True) if t is not None else None for t in (x, bias, noise, weight)]
    out = fn(leaves[0] * 1, *leaves[1:])  # a fresh non-leaf, as a convolution's output is
    (out * probe).sum().backward()
    return [out.detach()] + [t.grad for t in leaves if t is not None]


# -- the fused noise + bias + leaky ReLU -------------------------------------------------------


@pytest.mark.parametrize("noise_batch", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_activation_is_bitwise_the_unfused_ops(noise_batch, dtype):
    x, bias, noise, weight = operands(dtype, noise_batch)
    probe = torch.randn(x.shape, dtype=dtype)
    expected = value_and_grads(unfused, x, bias, noise, weight, probe)
    actual = value_and_grads(noise_bias_leaky_relu_, x, bias, noise, weight, probe)
    for a, e in zip(actual, expected):
        assert torch.equal(a, e)


def test_fused_activation_without_noise():
    x, bias, _, _ = operands()
    probe = torch.randn(x.shape)
    expected = value_and_grads(lambda x, b, n, w: unfused(x, b, None, None), x, bias, None, None, probe)
    actual = value_and_grads(lambda x, b, n, w: noise_bias_leaky_relu_(x, b), x, bias, None, None, probe)
    for a, e in zip(actual, expected):
        assert torch.equal(a, e)


def test_fused_activation_gradcheck():
    inputs = [t.requires_grad_(True) for t in operands(torch.float64, noise_batch=3)]
    assert torch.autograd.gradcheck(lambda x, b, n, w: noise_bias_leaky_relu_(x * 1, b, n, w), inputs)


def test_fused_activation_works_in_place_and_keeps_only_its_output():
    x, bias, noise, weight = operands()
    bias.requires_grad_(True)
    fresh = x * 1
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = noise_bias_leaky_relu_(fresh, bias, noise, weight)
    assert out.data_ptr() == fresh.data_ptr()
    big = [t for t in saved if t.numel() == x.numel()]
    assert len(big) == 1 and big[0].data_ptr() == out.data_ptr()


def test_fused_activation_without_autograd_is_the_same_in_place():
    x, bias, noise, weight = operands()
    fresh = x.clone()
    with torch.no_grad():
        out = noise_bias_leaky_relu_(fresh, bias, noise, weight)
    assert out is fresh
    assert torch.equal(out, unfused(x, bias, noise, weight))


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_fused_activation_on_a_reshaped_convolution_output_modifies_the_base(memory_format):
    # The grouped modulated convolution returns its [1, B*C, H, W] output viewed as
    # [B, C, H, W]; the gradient must not go through a copy of the base (CopySlices).
    x, bias, noise, weight = operands()
    probe = torch.randn(x.shape)
    leaf = x.reshape(1, 12, 5, 6).contiguous(memory_format=memory_format).requires_grad_(True)
    view = (leaf * 1).view(3, 4, 5, 6)
    out = noise_bias_leaky_relu_(view, bias, noise, weight)
    assert "CopySlices" not in type(out.grad_fn.next_functions[0][0]).__name__
    (out * probe).sum().backward()
    expected = value_and_grads(unfused, x, bias, noise, weight, probe)
    assert torch.equal(out.detach(), expected[0])
    assert torch.equal(leaf.grad.reshape(3, 4, 5, 6), expected[1])


def test_fused_activation_on_a_transposed_view_is_not_applied_to_the_base():
    x, bias, noise, weight = operands()
    probe = torch.randn(x.shape)
    leaf = x.transpose(2, 3).contiguous().requires_grad_(True)
    view = (leaf * 1).transpose(2, 3)  # same memory and size as its base, other element order
    out = noise_bias_leaky_relu_(view, bias, noise, weight)
    (out * probe).sum().backward()
    expected = value_and_grads(unfused, x, bias, noise, weight, probe)
    assert torch.equal(out.detach(), expected[0])
    assert torch.equal(leaf.grad.transpose(2, 3), expected[1])


def test_fused_activation_keeps_the_unfused_dtype_promotion():
    x, bias, noise, weight = operands()
    out = noise_bias_leaky_relu_(x.to(torch.bfloat16), bias, noise, weight)
    assert out.dtype == torch.float32
    assert torch.equal(out, unfused(x.to(torch.bfloat16), bias, noise, weight))


# -- the blur keeps no activation ----------------------------------------------------------------


@pytest.mark.parametrize("pad", [(1, 1), (2, 1)])
def test_blur_gradient_is_autograds_without_keeping_the_input(pad):
    kernel = make_blur_kernel((1, 3, 3, 1), gain=4.0)
    x = torch.randn(2, 3, 9, 9, requires_grad=True)
    weight = kernel.flip((0, 1)).expand(3, 1, 4, 4)
    padded = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    expected = F.conv2d(padded, weight, groups=3)
    probe = torch.randn(expected.shape)
    (expected_grad,) = torch.autograd.grad((expected * probe).sum(), x)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = blur(x * 1, kernel, pad)
    assert all(t.numel() < x.numel() for t in saved)
    (grad,) = torch.autograd.grad((out * probe).sum(), x)
    assert torch.equal(out, expected) and torch.equal(grad, expected_grad)


# -- the grouped form's per-sample weights ----------------------------------------------------------


@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("demodulate", [False, True])
def test_grouped_weights_agree_with_the_reference_sequence(upsample, demodulate):
    torch.manual_seed(0)
    conv = ModulatedConv2d(8, 16, 3, 4, demodulate=demodulate, upsample=upsample)
    style = torch.randn(2, 8).double()
    conv.double()
    reference = ReferenceModulatedConv2d._grouped_weight(conv, style)
    assert torch.allclose(conv._grouped_weight(style), reference, rtol=1e-12, atol=0)
    transposed = conv._grouped_weight(style, transposed=True)
    assert transposed.is_contiguous()
    assert torch.allclose(transposed, reference.transpose(1, 2), rtol=1e-12, atol=0)
    assert torch.equal(ReferenceModulatedConv2d._grouped_weight(conv, style, transposed=True),
                       reference.transpose(1, 2))


# -- the generator with and without the fused ops -------------------------------------------------


def image_and_grad(g: Generator, w_plus: torch.Tensor, noise="const"):
    w = w_plus.clone().requires_grad_(True)
    image = g.synthesis(w, noise=noise)
    (image * torch.linspace(-1, 1, image.numel(), dtype=image.dtype).view(image.shape)).sum().backward()
    return image.detach(), w.grad


@pytest.mark.parametrize("form", ["grouped", "shared"])
def test_fused_ops_agree_with_the_reference_sequence(form):
    # float64: the fused and reference sequences round differently, and in float32 the gradient
    # of the tiny random model amplifies that past 1e-5 on AVX2 CPUs (not on AVX-512); in
    # float64 the two agree to rounding everywhere, so a real difference cannot hide
    def tiny():
        return load_generator_checkpoint(TINY).set_modulated_conv(form).double()

    g = tiny()
    reference_form = use_reference_sequence(tiny())
    assert uses_reference_sequence(reference_form) and not uses_reference_sequence(g)
    assert sorted(reference_form.state_dict()) == sorted(g.state_dict())
    w_plus = torch.randn(2, g.n_latent, g.style_dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fused = image_and_grad(g, w_plus)
    reference = image_and_grad(reference_form, w_plus)
    for a, b in zip(fused, reference):
        assert a.dtype == torch.float64
        assert (a - b).abs().max() <= 1e-10 * b.abs().max()
    # The fused activation alone (per-sample weights as the reference builds them) is exact.
    for a, b in zip(image_and_grad(use_reference_sequence(tiny(), activations=False), w_plus), reference):
        assert torch.equal(a, b)


def test_fused_ops_keep_fewer_activations():
    g = load_generator_checkpoint(TINY)
    w_plus = torch.randn(2, g.n_latent, g.style_dim).requires_grad_(True)

    def saved_bytes(g):
        storages = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            g.synthesis(w_plus)
        return sum(storages.values())

    fused = saved_bytes(g)
    assert fused < 0.8 * saved_bytes(use_reference_sequence(load_generator_checkpoint(TINY)))


# -- the CPU backend's malloc tuning ------------------------------------------------------------


class FakeLibc:
    def __init__(self):
        self.calls = []

    @property
    def mallopt(self):
        libc = self

        def mallopt(param, value):
            libc.calls.append((param, value))
            return 1

        return mallopt


@pytest.fixture
def fake_libc(monkeypatch):
    libc = FakeLibc()
    opened = []
    monkeypatch.setattr(builtin_backends, "_malloc_tuned", False)
    monkeypatch.setattr(builtin_backends.ctypes, "CDLL", lambda name: opened.append(name) or libc)
    monkeypatch.delenv(builtin_backends.ENV_MALLOC_TUNING, raising=False)
    libc.opened = opened
    return libc


def test_malloc_tuning_on_linux_glibc_when_asked(monkeypatch, fake_libc):
    monkeypatch.setenv(builtin_backends.ENV_MALLOC_TUNING, "1")
    monkeypatch.setattr(builtin_backends.sys, "platform", "linux")
    monkeypatch.setattr(builtin_backends.os, "confstr", lambda name: "glibc 2.36", raising=False)
    assert builtin_backends.tune_malloc()
    assert fake_libc.opened == ["libc.so.6"]
    assert fake_libc.calls == [(-4, 0), (-1, -1), (-2, 64 << 20)]
    assert builtin_backends.tune_malloc()  # once per process
    assert len(fake_libc.calls) == 3


@pytest.mark.parametrize("platform, libc", [("darwin", None), ("win32", None), ("linux", "musl")])
def test_malloc_tuning_is_skipped_elsewhere(monkeypatch, fake_libc, platform, libc):
    monkeypatch.setenv(builtin_backends.ENV_MALLOC_TUNING, "1")
    monkeypatch.setattr(builtin_backends.sys, "platform", platform)

    def confstr(name):
        if libc is None:
            raise ValueError("unrecognized configuration name")
        return libc

    monkeypatch.setattr(builtin_backends.os, "confstr", confstr, raising=False)
    assert not builtin_backends.tune_malloc()
    assert fake_libc.calls == []


@pytest.mark.parametrize("value", [None, "0", "off", "false"])
def test_malloc_tuning_is_off_unless_asked(monkeypatch, fake_libc, value):
    monkeypatch.setattr(builtin_backends.sys, "platform", "linux")
    monkeypatch.setattr(builtin_backends.os, "confstr", lambda name: "glibc 2.36", raising=False)
    if value is not None:
        monkeypatch.setenv(builtin_backends.ENV_MALLOC_TUNING, value)
    assert not builtin_backends.tune_malloc()
    assert fake_libc.calls == []


def test_cpu_backend_prepare_tunes_malloc(mocker):
    tune = mocker.patch.object(builtin_backends, "tune_malloc", return_value=True)
    model = builtin_backends.CPUBackend().prepare(torch.nn.Linear(2, 2))
    tune.assert_called_once_with()
    assert isinstance(model, torch.nn.Linear)


@pytest.mark.skipif(
    not builtin_backends.sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only"
)
def test_real_mallopt_accepts_the_settings(monkeypatch):
    # The real call, in a child process so that this one's malloc is left alone.
    import subprocess
    import sys

    monkeypatch.setenv(builtin_backends.ENV_MALLOC_TUNING, "1")
    code = (
        "import essencekit_builtins.backends as b, os;"
        "ok = b.tune_malloc();"
        "glibc = os.confstr('CS_GNU_LIBC_VERSION').startswith('glibc');"
        "raise SystemExit(0 if ok == glibc else 1)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- transparent huge pages, requested before torch loads ------------------------------------------


def _in_fresh_python(code: str, **env: str) -> str:
    import os
    import subprocess
    import sys

    environment = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    result = subprocess.run(
        [sys.executable, "-c", code], env={**environment, **env}, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


HUGE_PAGES_PROBE = """
import essencekit, os, torch
x = torch.ones(64, 1024, 1024)  # 256 MiB
huge = 0
if os.path.exists("/proc/self/smaps_rollup"):
    for line in open("/proc/self/smaps_rollup"):
        if line.startswith("AnonHugePages:"):
            huge = int(line.split()[1])
print(os.environ.get("THP_MEM_ALLOC_ENABLE"), huge)
"""


def _system_gives_huge_pages() -> bool:
    path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return path.exists() and ("[madvise]" in path.read_text() or "[always]" in path.read_text())


def test_importing_essencekit_first_gives_torch_huge_pages():
    setting, huge_kib = _in_fresh_python(HUGE_PAGES_PROBE).split()
    assert setting == "1"
    if _system_gives_huge_pages():
        # Huge pages of the 256 MiB tensor (how many depends on the kernel finding free 2 MiB
        # blocks; off, there are none, see below).
        assert int(huge_kib) >= 2048


def test_huge_pages_can_be_turned_off():
    setting, huge_kib = _in_fresh_python(HUGE_PAGES_PROBE, THP_MEM_ALLOC_ENABLE="0").split()
    assert setting == "0"
    if _system_gives_huge_pages() and "[madvise]" in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text():
        assert int(huge_kib) < 2048


@pytest.mark.parametrize(
    "setting, env, on, says",
    [
        ("always [madvise] never\n", "1", True, "on (THP_MEM_ALLOC_ENABLE=1, system: madvise)"),
        ("always madvise [never]\n", "1", False, "the system has them off"),
        ("always [madvise] never\n", "0", False, "off: THP_MEM_ALLOC_ENABLE is '0', not '1'"),
        # torch warns about and ignores anything but 0 and 1
        ("always [madvise] never\n", "true", False, "off: THP_MEM_ALLOC_ENABLE is 'true'"),
        ("[always] madvise never\n", "0", True, "all large memory"),
        (None, "1", False, "not available on this system"),
    ],
)
def test_huge_pages_status_says_why(tmp_path, monkeypatch, setting, env, on, says):
    from essencekit.hugepages import HUGE_PAGES_ENV, huge_pages_status

    path = tmp_path / "enabled"
    if setting is not None:
        path.write_text(setting)
    monkeypatch.setenv(HUGE_PAGES_ENV, env)
    active, detail = huge_pages_status(str(path))
    assert active is on and says in detail


def test_doctor_reports_huge_pages(monkeypatch):
    from essencekit import doctor

    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "0")
    (check,) = [c for c in doctor._environment() if c.name == "huge pages"]
    assert check.status == doctor.INFO and "THP_MEM_ALLOC_ENABLE" in check.detail
