"""Backend selection and the backends' behaviour; CUDA and MPS are mocked, the CPU runs."""

from __future__ import annotations

import pytest
import torch

from essencekit import EssencekitError
from essencekit.backends import all_backends, resolve_backend, select_backend


@pytest.fixture
def no_gpu(mocker):
    mocker.patch("torch.cuda.is_available", return_value=False)
    mocker.patch("torch.backends.mps.is_available", return_value=False)


@pytest.fixture
def fake_cuda(mocker):
    mocker.patch("torch.version.cuda", "12.4")
    mocker.patch("torch.cuda.is_available", return_value=True)


def test_builtin_backends_are_registered():
    assert {"cpu", "cuda", "mps"} <= set(all_backends())


def test_auto_choice_prefers_cuda_then_mps_then_cpu(mocker, no_gpu):
    assert select_backend().name == "cpu"
    mocker.patch("torch.backends.mps.is_built", return_value=True)
    mocker.patch("torch.backends.mps.is_available", return_value=True)
    assert select_backend().name == "mps"
    mocker.patch("torch.version.cuda", "12.4")
    mocker.patch("torch.cuda.is_available", return_value=True)
    assert select_backend().name == "cuda"


def test_environment_variable_and_argument_override(monkeypatch, fake_cuda):
    monkeypatch.setenv("ESSENCEKIT_BACKEND", "cpu")
    assert select_backend().name == "cpu"
    assert select_backend("cuda").name == "cuda"  # the argument beats the variable


def test_unavailable_backend_names_the_reason(mocker):
    mocker.patch("torch.version.cuda", None)
    with pytest.raises(EssencekitError, match="backend 'cuda' .* not available here: this torch build .* has no CUDA"):
        select_backend("cuda")
    mocker.patch("torch.version.cuda", "12.4")
    mocker.patch("torch.cuda.is_available", return_value=False)
    with pytest.raises(EssencekitError, match="no CUDA device is visible"):
        select_backend("cuda")


def test_unavailable_backend_from_environment_says_where_it_came_from(monkeypatch, no_gpu):
    monkeypatch.setenv("ESSENCEKIT_BACKEND", "mps")
    with pytest.raises(EssencekitError, match=r"\$ESSENCEKIT_BACKEND"):
        select_backend()


def test_unknown_backend_lists_the_known_ones():
    with pytest.raises(EssencekitError, match="unknown backend 'tpu'.*cpu, cuda, mps"):
        select_backend("tpu")


def test_cuda_autocast_dtype_follows_bf16_support(mocker, fake_cuda):
    cuda = all_backends()["cuda"]
    mocker.patch("torch.cuda.is_bf16_supported", return_value=True)
    assert cuda.autocast_dtype == torch.bfloat16
    mocker.patch("torch.cuda.is_bf16_supported", return_value=False)
    assert cuda.autocast_dtype == torch.float16
    assert cuda.device == torch.device("cuda")


def test_cuda_prepare_sets_fast_paths_and_moves_through_the_backend(mocker, fake_cuda, monkeypatch):
    precision = mocker.patch("torch.set_float32_matmul_precision")
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    model = mocker.MagicMock()
    model.to.return_value = model
    prepared = all_backends()["cuda"].prepare(model)
    assert prepared is model
    model.set_modulated_conv.assert_called_once_with("grouped")
    model.to.assert_any_call(torch.device("cuda"))
    model.to.assert_any_call(memory_format=torch.channels_last)
    precision.assert_called_once_with("high")
    assert torch.backends.cudnn.benchmark


def test_mps_backend_uses_fp16_and_reports_unbuilt_torch(mocker):
    mps = all_backends()["mps"]
    mocker.patch("torch.backends.mps.is_built", return_value=False)
    ok, reason = mps.availability()
    assert not ok and "no MPS support" in reason
    mocker.patch("torch.backends.mps.is_built", return_value=True)
    mocker.patch("torch.backends.mps.is_available", return_value=True)
    assert mps.availability() == (True, "")
    assert mps.autocast_dtype == torch.float16
    assert mps.device == torch.device("mps")


def test_cpu_backend_really_runs_a_model(no_gpu):
    backend = select_backend()
    assert backend.name == "cpu" and backend.autocast_dtype == torch.float32
    model = backend.prepare(torch.nn.Linear(4, 2))
    with backend.autocast():
        y = model(torch.ones(3, 4, device=backend.device))
    assert y.dtype == torch.float32 and y.device.type == "cpu"
    backend.synchronize()


def test_resolve_backend_accepts_names_devices_and_backends(mocker, no_gpu, fake_cuda):
    mocker.patch("torch.cuda.is_bf16_supported", return_value=True)
    cpu = all_backends()["cpu"]
    assert resolve_backend(None).name == "cuda"
    assert resolve_backend("cpu") is cpu
    assert resolve_backend(torch.device("cpu")) is cpu
    assert resolve_backend(cpu) is cpu
    second_gpu = resolve_backend("cuda:1")
    assert second_gpu.name == "cuda" and second_gpu.device == torch.device("cuda:1")
    assert second_gpu.autocast_dtype == torch.bfloat16
