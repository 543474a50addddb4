"""``essencekit extract`` and ``essencekit.extract`` on the tiny generator and a tiny random CLIP."""

from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import essencekit
from essencekit.errors import EssencekitError
from essencekit.essence import load_essence
from essencekit.extraction import optimise as optimise_module
from essencekit.extraction.eta import EtaEstimator, format_duration

FIXTURES = Path(__file__).parent / "fixtures"
GENERATOR = FIXTURES / "tiny-stylegan2.pt"


def _photo(path: Path, seed: int = 0, size=(90, 70)) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def setup(tiny_clip_plugin, tiny_clip_weights, tmp_path, monkeypatch):
    """A target photo, an output folder, and the arguments that select the tiny models."""
    monkeypatch.chdir(tmp_path)
    target = _photo(tmp_path / "target.png")
    out = tmp_path / "out"
    out.mkdir()
    models = ["--generator", GENERATOR, "--clip", tiny_clip_plugin.name, "--clip-weights", tiny_clip_weights]
    quick = ["--steps", "2", "--num-sources", "2", "--held-out", "0", "--restarts", "1", "--init", "random"]
    return types.SimpleNamespace(target=target, out=out, models=models, quick=quick, tmp=tmp_path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_extract_writes_an_essence_with_its_metadata(setup, capsys, cli):
    output = setup.out / "target.safetensors"
    grid = setup.out / "grid.png"
    code, out, err = cli(
        ["extract", setup.target, "-o", output, *setup.models, "--steps", "4", "--num-sources", "3",
         "--held-out", "2", "--restarts", "2", "--init", "random", "--seed", "5", "--preview", grid, "--json"],
    )
    assert code == 0, err
    summary = json.loads(out)["essences"][0]
    assert summary["output"] == str(output) and summary["seed"] == 5 and summary["steps_done"] == 4
    assert "step 4/4" in err  # progress lines when stderr is not a terminal
    essence = load_essence(output)
    meta = essence.metadata
    assert essence.direction.shape == (10, 64) and essence.coefficients.shape == (3,)
    assert meta["format_version"] == "1" and meta["latent_space"] == "w+" and json.loads(meta["shape"]) == [10, 64]
    assert meta["generator"] == "tiny-stylegan2.pt" and meta["generator_sha256"] == _sha256(GENERATOR)
    assert meta["clip_model"] == "test-tiny-vit" and meta["clip_input"] == "raw"
    assert meta["target_file"] == "target.png" and meta["target_sha256"] == _sha256(setup.target)
    assert meta["seed"] == "5" and meta["essencekit_version"] == essencekit.__version__
    assert meta["torch_version"] == str(torch.__version__)
    hyper = json.loads(meta["hyperparameters"])
    for key, value in {"steps": 4, "lr": 0.2, "weight_decay": 0.003, "lambda_transfer": 1.0,
                       "lambda_consistency": 0.6, "consistency": "raw", "num_sources": 3, "held_out": 2,
                       "restarts": 2, "init": "random", "coefficients": "sign", "fast": False}.items():
        assert hyper[key] == value, key
    restarts = json.loads(meta["restarts"])
    assert len(restarts) == 2 and all("held_out_loss" in r and "loss" in r for r in restarts)
    chosen = min(range(2), key=lambda k: restarts[k]["held_out_loss"])
    assert meta["chosen_restart"] == str(chosen) and restarts[chosen]["chosen"]
    assert summary["restarts"] == restarts
    assert json.loads(meta["coefficients"]) == pytest.approx(essence.coefficients.tolist(), abs=1e-6)
    assert float(meta["recommended_strength"]) == pytest.approx(float(essence.coefficients.mean()))
    assert essence.recommended_strength == pytest.approx(restarts[chosen]["strength"], abs=1e-5)
    sources = json.loads(meta["sources"])
    assert sources == {"kind": "sampled", "num_sources": 3, "held_out": 2, "truncation": 0.7, "seed": 5}
    with Image.open(grid) as sheet:
        assert sheet.size == (4 * 256, 20 + 3 * 256)


def test_seed_repeats_a_run_and_overwrite_replaces_the_default_output(setup, capsys, cli):
    args = ["extract", setup.target, *setup.models, *setup.quick, "--seed", "11"]
    code, out, err = cli(args)
    default = setup.tmp / "target.pt"  # -o defaults to <target stem>.pt in the current folder
    assert code == 0 and default.is_file() and "wrote" in out and "target.pt" in out, err
    first = load_essence(default)
    code, _, err = cli(args)
    assert code == 1 and "already exists" in err and "--overwrite" in err
    assert torch.equal(load_essence(default).direction, first.direction)
    code, _, err = cli(args + ["--overwrite"])
    assert code == 0, err
    again = load_essence(default)
    assert torch.equal(again.direction, first.direction) and torch.equal(again.coefficients, first.coefficients)


def test_several_targets_go_to_a_folder(setup, capsys, cli):
    second = _photo(setup.tmp / "second.jpg", seed=1)
    folder = setup.out / "essences"
    code, _, err = cli(["extract", setup.target, second, "-o", folder, *setup.models, *setup.quick,
                         "--steps", "1", "--seed", "2"])
    assert code == 0, err
    assert sorted(p.name for p in folder.iterdir()) == ["second.pt", "target.pt"]
    a, b = load_essence(folder / "target.pt"), load_essence(folder / "second.pt")
    assert a.metadata["target_file"] == "target.png" and b.metadata["target_file"] == "second.jpg"
    assert a.metadata["target_sha256"] != b.metadata["target_sha256"]


def _interrupt_at(monkeypatch, call: int):
    original = optimise_module.total_loss
    calls = []

    def total_loss(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(optimise_module, "total_loss", total_loss)


def test_ctrl_c_saves_the_best_so_far_and_exits_130(setup, capsys, monkeypatch, cli):
    _interrupt_at(monkeypatch, 4)  # during step 4: steps 1-3 are measured
    output = setup.out / "partial.pt"
    code, out, err = cli(["extract", setup.target, "-o", output, *setup.models, *setup.quick[2:],
                           "--steps", "50", "--held-out", "2"])
    assert code == 130 and "Traceback" not in err
    assert "saved the best essence so far" in err and str(output) in err
    essence = load_essence(output)
    assert essence.metadata["interrupted"] == "true" and essence.metadata["steps_done"] == "3"
    assert essence.metadata["selection"] == "training loss"


def test_ctrl_c_before_any_step_writes_nothing(setup, capsys, monkeypatch, cli):
    _interrupt_at(monkeypatch, 1)
    code, _, err = cli(["extract", setup.target, "-o", setup.out / "x.pt", *setup.models, *setup.quick])
    assert code == 130 and "Interrupted" in err
    assert list(setup.out.iterdir()) == []


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--steps", "0"], "steps must be a whole number >= 1"),
        (["--lr", "-1"], "lr must be a finite number > 0"),
        (["--lr", "nan"], "lr must be a finite number"),
        (["--weight-decay", "-0.1"], "weight_decay must be a finite number >= 0"),
        (["--num-sources", "1"], "pairs"),
        (["--held-out", "-1"], "held_out must be a whole number >= 0"),
        (["--restarts", "0"], "restarts must be a whole number >= 1"),
        (["--batch-size", "0"], "batch_size must be a whole number >= 1"),
        (["--seed", "-3"], "--seed"),
        (["--lambda-transfer", "0", "--lambda-consistency", "0"], "nothing to optimise"),
        (["-o", "out/x.npy"], "written as .pt or .safetensors"),
        (["-o", "target.png/x.pt"], "target.png is a file, not a folder"),  # refused before the run, not after
        (["--preview", "out/grid.jpg"], ".png"),
        (["--sources", "nowhere.npy"], "no such file or folder"),
    ],
)
def test_nonsense_is_one_line_and_writes_nothing(setup, capsys, extra, message, cli):
    code, out, err = cli(["extract", setup.target, "-o", setup.out / "x.pt", *setup.models, *setup.quick, *extra])
    assert out == "" and message in err, err
    if extra[0] == "--sources":  # a file that is not there: an error
        assert code == 1 and err.startswith("Error: ") and err.count("\n") == 1
    else:  # a value that cannot work: a usage error, as in every command, naming the flag given
        assert code == 2 and f"Error: Invalid value for '{extra[0]}'" in err
    assert list(setup.out.iterdir()) == []


def test_bad_inputs_are_refused(setup, capsys, cli):
    def refused(args, message, code=1):
        result, _, err = cli(["extract", *args])
        assert result == code and message in err, err
        assert list(setup.out.iterdir()) == [], "nothing written"

    refused([setup.tmp / "missing.jpg", *setup.models, *setup.quick], "cannot read the target image")
    (setup.tmp / "fake.png").write_text("not an image")
    refused([setup.tmp / "fake.png", *setup.models, *setup.quick], "fake.png")
    refused([setup.target, "-o", setup.out / "x.pt", "--steps", "abc"], "Invalid value", code=2)
    # a generator and CLIP that do not fit together, or files of the wrong kind
    models = dict(zip(setup.models[::2], setup.models[1::2]))
    refused([setup.target, "-o", setup.out / "x.pt", "--generator", GENERATOR, "--clip", models["--clip"],
             "--clip-weights", GENERATOR, *setup.quick], "CLIP")
    refused([setup.target, "-o", setup.out / "x.pt", "--generator", models["--clip-weights"], "--clip",
             models["--clip"], "--clip-weights", models["--clip-weights"], *setup.quick], "g_ema")
    # source latents of another generator, and too few of them
    np.save(setup.tmp / "wrong.npy", np.zeros((4, 18, 512), dtype=np.float32))
    refused([setup.target, "-o", setup.out / "x.pt", *setup.models, *setup.quick, "--sources", setup.tmp / "wrong.npy"],
            "do not fit the generator")
    np.save(setup.tmp / "few.npy", np.zeros((3, 10, 64), dtype=np.float32))
    refused([setup.target, "-o", setup.out / "x.pt", *setup.models, *setup.quick, "--held-out", "2",
             "--sources", setup.tmp / "few.npy"], "provide 3 latents")


def test_sources_from_a_latents_file(setup, capsys, cli):
    latents = torch.randn(5, 10, 64, generator=torch.Generator().manual_seed(0)) * 0.5
    np.save(setup.tmp / "latents.npy", latents.numpy())
    output = setup.out / "x.pt"
    code, _, err = cli(["extract", setup.target, "-o", output, *setup.models, *setup.quick, "--steps", "1",
                         "--sources", setup.tmp / "latents.npy", "--held-out", "2", "--num-sources", "3"])
    assert code == 0, err
    sources = json.loads(load_essence(output).metadata["sources"])
    assert sources["kind"] == "file" and sources["count"] == 5 and sources["num_sources"] == 3
    assert sources["sha256"] == _sha256(setup.tmp / "latents.npy")


# --------------------------------------------------------------------------- faces and inversions


class _Face:
    def __init__(self, seed):
        self.seed = seed

    def crop_tensor(self, size=256):
        return torch.rand(3, size, size, generator=torch.Generator().manual_seed(self.seed)) * 2 - 1


def _fake_faces(monkeypatch, align_faces):
    module = types.ModuleType("essencekit.faces")
    module.align_faces = align_faces
    monkeypatch.setitem(sys.modules, "essencekit.faces", module)


def test_init_auto_says_plainly_when_it_falls_back(setup, capsys, monkeypatch, cli):
    def no_aligner(image, *, aligner=None, which="largest"):
        raise EssencekitError("no face aligner is installed (pip install dlib-bin)")

    _fake_faces(monkeypatch, no_aligner)
    output = setup.out / "x.pt"
    args = ["extract", setup.target, "-o", output, *setup.models, *setup.quick[:-2], "--restarts", "2"]
    code, _, err = cli(args + ["--init", "auto"])
    assert code == 0 and "no face aligner is installed" in err and "random" in err
    assert [r["init"] for r in json.loads(load_essence(output).metadata["restarts"])] == ["random", "random"]
    output.unlink()
    code, _, err = cli(args + ["--init", "inversion"])
    assert code == 1 and "init 'inversion': cannot invert target.png" in err
    assert list(setup.out.iterdir()) == []


def test_inversion_start_and_photo_sources_with_tiny_e4e(setup, capsys, monkeypatch, cli):
    seen = []

    def align_faces(image, *, aligner=None, which="largest"):
        seen.append(image.size)
        return [] if image.size == (33, 33) else [_Face(len(seen))]

    _fake_faces(monkeypatch, align_faces)
    photos = setup.tmp / "photos"
    photos.mkdir()
    for index in range(3):
        _photo(photos / f"{index}.png", seed=index + 3)
    _photo(photos / "0b-noface.png", size=(33, 33))
    (photos / "notes.txt").write_text("ignored")
    output = setup.out / "x.pt"
    code, _, err = cli(["extract", setup.target, "-o", output, *setup.models, "--encoder", FIXTURES / "tiny-e4e.pt",
                         "--steps", "2", "--num-sources", "2", "--held-out", "0", "--restarts", "2",
                         "--init", "inversion", "--sources", photos])
    assert code == 0, err
    assert "skipped 1 photo" in err and "0b-noface.png (no face)" in err
    assert len(seen) == 4  # photos until two faces were inverted (2.png is never opened), and the target
    meta = load_essence(output).metadata
    assert [r["init"] for r in json.loads(meta["restarts"])] == ["inversion", "random"]
    assert json.loads(meta["sources"])["kind"] == "folder" and meta["encoder"] == "tiny-e4e.pt"


# --------------------------------------------------------------------------- the Python API


def test_python_api_with_objects_and_an_injected_inverter(tiny_generator, tiny_clip_encoder):
    notices, steps = [], []
    start = torch.randn(10, 64, generator=torch.Generator().manual_seed(4))
    image = Image.fromarray(np.full((40, 50, 3), 120, dtype=np.uint8))
    essence = essencekit.extract(
        image, generator=tiny_generator, clip=tiny_clip_encoder, inverter=lambda picture: start, steps=2,
        num_sources=2, held_out=1, restarts=2, seed=0, notify=notices.append, progress=steps.append, fast=True,
    )
    assert essence.direction.shape == (10, 64) and [s.step for s in steps] == [0, 1]
    assert steps[0].loss.shape == (2,)
    meta = essence.metadata
    assert [r["init"] for r in json.loads(meta["restarts"])] == ["inversion", "random"]
    assert meta["target_sha256"].startswith("pixels:") and meta["fast"] == "true" and notices == []
    with pytest.raises(TypeError, match="stepz"):
        essencekit.extract(image, generator=tiny_generator, clip=tiny_clip_encoder, stepz=3)


def test_python_api_refuses_a_clip_set_up_for_another_generator(tiny_generator, tiny_clip_plugin, tiny_clip_weights):
    from essencekit.clip import load_clip

    other = load_clip(tiny_clip_plugin.name, "cpu", generator_size=128, weights=tiny_clip_weights)
    with pytest.raises(EssencekitError, match="128 px"):
        essencekit.extract(Image.new("RGB", (8, 8)), generator=tiny_generator, clip=other, steps=1)


def test_held_out_sources_take_no_part_in_the_optimisation(tiny_generator):
    from essencekit.extraction.sources import resolve_sources

    sampled = resolve_sources(None, tiny_generator, num_sources=3, held_out=2, seed=0)
    assert sampled.train.shape == (3, 10, 64) and sampled.held_out.shape == (2, 10, 64)
    pairs = torch.cdist(sampled.train[:, 0], sampled.held_out[:, 0])
    assert pairs.min() > 1e-3
    # more held-out sources leave the training ones unchanged
    more = resolve_sources(None, tiny_generator, num_sources=3, held_out=4, seed=0)
    assert torch.allclose(more.train, sampled.train, atol=1e-5)
    assert torch.allclose(more.held_out[:2], sampled.held_out, atol=1e-5)


# --------------------------------------------------------------------------- the ETA


def test_eta_ignores_the_warm_up_and_warns_once():
    eta = EtaEstimator(1000)
    assert eta.remaining() is None and not eta.should_warn()
    for seconds in (30.0, 5.0, 5.0, 5.0):
        eta.update(seconds)
    assert eta.remaining() == pytest.approx(996 * 5.0)
    assert eta.should_warn() and not eta.should_warn()
    quick = EtaEstimator(10)
    for _ in range(3):
        quick.update(1.0)
    assert not quick.should_warn()
    assert format_duration(4980) == "1 h 23 min" and format_duration(75) == "1 min 15 s"


def test_long_runs_suggest_the_faster_options(capsys):
    from essencekit.cli.extract_cmd import _Display
    from essencekit.extraction.optimise import StepReport

    display = _Display(1000, "obama.jpg", "cpu", 1024, enabled=False)
    for step in range(4):
        loss = torch.tensor([0.9, 0.8])
        display.step(StepReport(step, 1000, 0.2, loss, loss, loss, loss, 20.0, 20.0 * (step + 1)))
    err = capsys.readouterr().err
    assert err.count("--fast") == 1 and "5 h" in err and "GPU" in err
