"""Backend selection and the backends' behaviour; CUDA and MPS are mocked, the CPU runs."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch

import essencekit
from essencekit import EssencekitError
from essencekit.backends import all_backends, resolve_backend, select_backend
from essencekit.errors import OptionError

FIXTURES = Path(__file__).parent / "fixtures"


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
    cuda = all_backends()["cuda"]
    prepared = cuda.prepare(model)
    assert prepared is model
    model.configure_for.assert_called_once_with(cuda)  # the model adapts itself; the backend knows no model
    model.to.assert_any_call(torch.device("cuda"))
    assert cuda.channels_last  # what the channels-last test below applies
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


# --------------------------------------------------------------------------- names before devices


def test_auto_and_plugin_names_are_looked_up_before_torch_devices(register_plugin, monkeypatch, no_gpu):
    from test_docs import _load_example

    example = register_plugin(_load_example("register_backends"), "docs-example")
    # torch.device("cpu-1") and torch.device("auto") raise: the registry must answer first
    assert isinstance(resolve_backend("cpu-1"), example.SingleThreadCPU)
    assert resolve_backend("auto").name == "cpu" and select_backend("AUTO").name == "cpu"
    assert isinstance(resolve_backend("cpu-1:0"), example.SingleThreadCPU)  # then an index
    monkeypatch.setenv("ESSENCEKIT_BACKEND", "cpu-1")
    assert resolve_backend("auto").name == "cpu-1"  # auto lets the variable choose, as bench did
    monkeypatch.setenv("ESSENCEKIT_BACKEND", "auto")
    assert resolve_backend(None).name == "cpu"
    with pytest.raises(EssencekitError, match="unknown backend 'tpu:1'.*cpu-1.*or auto"):
        resolve_backend("tpu:1")


def test_a_pinned_device_index_reaches_every_method_of_the_backend(mocker, fake_cuda):
    free = mocker.patch("torch.cuda.mem_get_info", return_value=(10 * 2**30, 80 * 2**30))
    second_gpu = resolve_backend("cuda:1")
    assert second_gpu.memory_budget() == 6 * 2**30  # 60% of what is free on that GPU
    free.assert_called_once_with(torch.device("cuda:1"))
    assert second_gpu.name == "cuda" and second_gpu.channels_last and all_backends()["cuda"].device.index is None


# --------------------------------------------------------------------------- device policy


class _Accelerator(essencekit.Backend):
    """A third-party backend on the CPU that declares its own device policy."""

    name = "accelerator"
    priority = -5
    max_batch = 3
    channels_last = True
    fast_grouped_conv = False

    def availability(self):
        return True, ""

    @property
    def device(self):
        return torch.device("cpu")

    def memory_budget(self):
        return 64 * 2**30

    def io_workers(self):
        return 2, 5


class _Plain(_Accelerator):
    """One that declares nothing: the Backend defaults."""

    name = "plain"
    max_batch = essencekit.Backend.max_batch
    channels_last = essencekit.Backend.channels_last
    fast_grouped_conv = essencekit.Backend.fast_grouped_conv
    memory_budget = essencekit.Backend.memory_budget
    io_workers = essencekit.Backend.io_workers


def test_builtin_backends_declare_todays_device_policy(mocker, fake_cuda, monkeypatch):
    cpu, cuda, mps = (all_backends()[name] for name in ("cpu", "cuda", "mps"))
    assert (cpu.max_batch, cpu.io_workers(), cpu.channels_last, cpu.fast_grouped_conv) == (1, (0, 0), False, True)
    # fixed readings: the host's real free memory changes between two reads
    for available, budget in ((6 * 2**30, 3 * 2**30), (64 * 2**30, 5 * 2**30), (None, 4 * 2**30)):
        monkeypatch.setattr("essencekit.backends.available_host_memory", lambda reading=available: reading)
        # half of what is available, at most 5 GiB; 4 GiB where the host does not say
        assert cpu.memory_budget() == budget
    assert (cuda.max_batch, cuda.channels_last, cuda.fast_grouped_conv) == (32, True, True)
    mocker.patch("torch.cuda.mem_get_info", return_value=(40 * 2**30, 80 * 2**30))
    assert cuda.memory_budget() == 16 * 2**30  # 60% of the free memory, at most 16 GiB
    assert (mps.max_batch, mps.channels_last, mps.fast_grouped_conv) == (32, False, False)
    mocker.patch("torch.mps.recommended_max_memory", return_value=10 * 2**30, create=True)
    assert mps.memory_budget() == 4 * 2**30
    mocker.patch("os.cpu_count", return_value=16)
    assert cuda.io_workers() == mps.io_workers() == _Plain().io_workers() == (4, 8)
    plain = _Plain()
    assert (plain.max_batch, plain.channels_last, plain.fast_grouped_conv) == (32, False, True)
    assert plain.memory_budget() == cpu.memory_budget() == 4 * 2**30  # the last reading: none


def test_the_transfer_pipeline_and_extract_take_their_policy_from_the_backend(tiny_generator, monkeypatch):
    from essencekit.chunked import plan_chunks
    from essencekit.transfers.pipeline import auto_batch_size

    # a device.type of "cpu" no longer means the cpu backend's cap of one image
    assert auto_batch_size(tiny_generator, _Accelerator()) == 3
    assert auto_batch_size(tiny_generator, all_backends()["cpu"]) == 1
    assert plan_chunks(tiny_generator, _Accelerator(), 64, 100) == (100, False)
    tight = _Accelerator()
    monkeypatch.setattr(tight, "memory_budget", lambda: 1)
    assert plan_chunks(tiny_generator, tight, 64, 100) == (1, True)


def test_the_backend_io_workers_feed_the_pipeline(monkeypatch, tmp_path):
    from essencekit.essence import Essence
    from essencekit.transfers import Transferrer, pipeline

    threads = {}
    real_map, real_pool = pipeline.ordered_map, pipeline.OrderedPool

    def reading(function, items, workers, *args):
        threads["readers"] = workers
        return real_map(function, items, workers, *args)

    def writing(workers, *args):
        threads["writers"] = workers
        return real_pool(workers, *args)

    monkeypatch.setattr(pipeline, "ordered_map", reading)
    monkeypatch.setattr(pipeline, "OrderedPool", writing)
    torch.save(torch.zeros(10, 64), tmp_path / "w.pt")  # a W+ latent: the generator's work only
    models = Transferrer(encoder=FIXTURES / "tiny-e4e.pt", device=_Accelerator())
    results = list(models.transfer([tmp_path / "w.pt"], Essence(torch.zeros(10, 64)), output=tmp_path / "out"))
    assert results and threads == {"readers": 2, "writers": 5}  # a cpu device, yet its own threads


def test_the_model_picks_its_form_from_what_the_backend_reports(tiny_generator):
    from essencekit.models.e4e import load_encoder_checkpoint

    generator = essencekit.load_generator(FIXTURES / "tiny-stylegan2.pt", device=_Accelerator())
    assert generator.modulated_conv == "shared"  # fast_grouped_conv = False
    assert essencekit.load_generator(FIXTURES / "tiny-stylegan2.pt", device="cpu").modulated_conv == "grouped"
    e4e = _Accelerator().prepare(load_encoder_checkpoint(FIXTURES / "tiny-e4e.pt"))
    assert e4e.generator.modulated_conv == "shared"
    assert not hasattr(essencekit.Backend, "modulated_conv")


def test_channels_last_reaches_4d_weights_and_leaves_5d_ones(tiny_generator):
    """The StyleGAN2 generator holds 5-D weights, which ``Module.to(memory_format=...)``
    refuses: the cuda backend (channels_last) must still prepare it."""
    generator = _Accelerator().prepare(tiny_generator)
    assert generator.convs[0].conv.weight.dim() == 5
    generator.input.input.data = torch.randn(1, 8, 4, 4)
    _Accelerator().prepare(generator)
    assert generator.input.input.is_contiguous(memory_format=torch.channels_last)
    conv = _Accelerator().prepare(torch.nn.Conv2d(3, 8, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


# --------------------------------------------------------------------------- through the command line
# `--backend auto` and a plugin backend's name in every command that has --backend: the docs'
# own example plugin (docs/plugins.md, "cpu-1"), the tiny fixtures, the smallest runs.


@pytest.fixture
def cpu_1(register_plugin, monkeypatch, mocker):
    """The docs' example backend, registered, with a spy on its prepare()."""
    from test_docs import _load_example

    # the example pins torch to one thread; keep the rest of the suite at full speed
    monkeypatch.setenv("CPU1_THREADS", str(torch.get_num_threads()))
    example = register_plugin(_load_example("register_backends"), "docs-example")
    return mocker.spy(example.SingleThreadCPU, "prepare")


@pytest.fixture
def work(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    from essencekit.essence import Essence

    monkeypatch.chdir(tmp_path)
    pixels = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "face.png")
    Essence(torch.randn(10, 64, generator=torch.Generator().manual_seed(0)) * 0.5,
            metadata={"name": "tiny"}).save(tmp_path / "tiny.pt")
    torch.save(torch.randn(2, 10, 64, generator=torch.Generator().manual_seed(1)), tmp_path / "sources.pt")
    torch.save(torch.randn(10, 64, generator=torch.Generator().manual_seed(2)), tmp_path / "w.pt")
    return tmp_path


def _command(command: str, work: Path, clip) -> list:
    e4e, generator = FIXTURES / "tiny-e4e.pt", FIXTURES / "tiny-stylegan2.pt"
    if command == "transfer":
        # from a W+ latent: the generator alone, no encoder pass
        return ["transfer", work / "w.pt", "-e", work / "tiny.pt", "-o", work / "out", "--encoder", e4e]
    if command == "invert":
        return ["invert", work / "face.png", "--no-align", "-o", work / "out", "--encoder", e4e]
    if command == "extract":
        return ["extract", work / "face.png", "-o", work / "x.pt", "--generator", generator, "--clip", clip.name,
                "--clip-weights", clip.weights_path, "--steps", "1", "--num-sources", "2", "--held-out", "0",
                "--restarts", "1", "--init", "random"]
    if command == "evaluate":
        return ["evaluate", "-e", work / "tiny.pt", "-t", work / "face.png", "--sources", work / "sources.pt",
                "-s", "1", "--encoder", e4e, "--identity-model", FIXTURES / "tiny-arcface.pth", "--clip", clip.name,
                "--clip-weights", f"{clip.name}={clip.weights_path}", "--no-align-target"]
    return ["bench", "--size", "16", "--max-channels", "8", "--repeats", "1", "--only", "generator-forward"]


@pytest.mark.parametrize("name", ["cpu-1", "auto"])
@pytest.mark.parametrize("command", ["transfer", "invert", "extract", "evaluate", "bench"])
def test_every_command_with_backend_accepts_auto_and_a_plugin_backend(
    command, name, cpu_1, work, tiny_clip_plugin, tiny_clip_weights, monkeypatch, capsys,
):
    from essencekit.bench import suite
    from essencekit.cli import main

    # bench measures in a worker process, which would not see a plugin registered here
    monkeypatch.setattr(suite, "subprocess_runner", lambda timeout=None: suite.in_process_runner)
    clip = types.SimpleNamespace(name=tiny_clip_plugin.name, weights_path=tiny_clip_weights)
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in [*_command(command, work, clip), "--backend", name]])
    err = capsys.readouterr().err
    assert exit_.value.code == 0, err  # was "Internal error: RuntimeError" (torch.device("cpu-1"))
    assert (cpu_1.call_count > 0) == (name == "cpu-1")  # the models went through the named backend


@pytest.mark.parametrize("name", ["nonsense", "cuda", ""])
def test_a_bad_backend_flag_is_a_usage_error_naming_it(name, no_gpu, tmp_path, cli):
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    code, out, err = cli(["transfer", tmp_path / "a.png", "--no-align", "-e", tmp_path / "e.pt", "-o", tmp_path / "o",
                          "--backend", name])
    assert code == 2 and out == "" and "Invalid value for '--backend'" in err, err


@pytest.mark.parametrize("value, message", [("nonsense", "unknown backend 'nonsense'"), ("mps", "not available")])
def test_a_bad_backend_from_the_environment_names_the_variable(value, message, monkeypatch, no_gpu):
    monkeypatch.setenv("ESSENCEKIT_BACKEND", value)
    for name in (None, "auto"):
        with pytest.raises(EssencekitError, match=rf"{message}.*\$ESSENCEKIT_BACKEND|ESSENCEKIT_BACKEND.*{message}") as caught:
            select_backend(name)
        assert not isinstance(caught.value, OptionError)  # not the caller's argument: exit 1
