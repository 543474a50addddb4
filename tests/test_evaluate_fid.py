"""``essencekit evaluate --fid``: the Fréchet Inception Distance, on the tiny models and a
random-init FID Inception of the real architecture (no download: the real weights are checked
by benchmarks/fid_check.py where they are available)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image
from test_evaluate import ARCFACE, _cli_models, setup, tiny_rn_weights  # noqa: F401 - fixtures

from essencekit.evaluation.api import evaluate
from essencekit.evaluation.fid import (
    FEATURE_DIM,
    InceptionFeatures,
    few_images_warning,
    frechet_distance,
    load_inception,
)
from essencekit.transfers.pipeline import to_uint8


def _scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """FID as the TTUR reference writes it: the matrix square root by scipy.linalg.sqrtm."""
    mu1, mu2 = a.mean(axis=0), b.mean(axis=0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_frechet_distance_equals_an_independent_scipy_computation():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(60, 12)) @ rng.normal(size=(12, 12))
    b = rng.normal(loc=0.5, size=(45, 12)) @ rng.normal(size=(12, 12)) + 2.0
    assert frechet_distance(a, b) == pytest.approx(_scipy_fid(a, b), rel=1e-9)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)
    # the same spread moved by c: FID is exactly |c|^2; the same set: 0
    shift = np.arange(12) / 10
    assert frechet_distance(a, a + shift) == pytest.approx(float((shift ** 2).sum()), rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # fewer images than dimensions on one side or both (every real use below 2048 images):
    # still the scipy figure
    c, d = rng.normal(size=(10, 24)) * 2, rng.normal(size=(14, 24)) + 0.3
    e = rng.normal(size=(80, 24)) @ rng.normal(size=(24, 24))
    for x, y in ((c, d), (c, e), (e, c)):
        assert frechet_distance(x, y) == pytest.approx(_scipy_fid(x, y), rel=1e-6)


def test_too_few_images_are_warned_about():
    assert few_images_warning(FEATURE_DIM, 7000) is None
    warning = few_images_warning(68, 7000)
    assert "68 generated" in warning and "real" not in warning.split("image(s)")[0] and "2048" in warning
    assert "5 real and 68 generated" in few_images_warning(68, 5)


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """A random-init FID Inception of the real architecture (torch-fidelity's), saved as a
    state dict: the file format of inception-v3-fid, built without downloading anything."""
    from compare.inception import save_random_inception

    return save_random_inception(tmp_path_factory.mktemp("inception") / "random-inception.pth")


@pytest.fixture
def real_dir(setup):  # noqa: F811 - the fixture imported above
    folder = setup.tmp / "real"
    folder.mkdir()
    for seed in range(3):
        pixels = np.random.default_rng(20 + seed).integers(0, 256, (48, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{seed}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_fid_per_strength_through_the_inception_file(setup, real_dir, inception_file):  # noqa: F811
    notes, counted = [], []
    result = evaluate(
        [setup.essences["alpha"]], [setup.targets["alpha"]], setup.latents, "1", encoder=setup.e4e, device="cpu",
        identity_model=ARCFACE, judges=setup.judges[:1], clip_weights={setup.judges[0]: setup.weights[setup.judges[0]]},
        align_target=False, fid=real_dir, fid_weights=inception_file, notify=notes.append, max_sources=3,
        real_progress=lambda n, total: counted.append((n, total)),
    )
    assert sum(n for n, _ in counted) == 3 and {total for _, total in counted} == {3}
    assert result.fid["real_cached"] == 0
    assert [(r.strength, r.fid.n_generated, r.fid.n_real) for r in result.rows] == [(0.0, 3, 3), (1.0, 3, 3)]
    assert result.fid["real_images"] == 3 and result.fid["real"] == "real"
    assert result.fid["inception"] == "random-inception.pth" and len(result.fid["inception_sha256"]) == 64
    assert result.fid["warning"] == few_images_warning(3, 3) and result.fid["warning"] in notes

    # independently: the reconstructions G(w), quantised as transfer does, and the real files,
    # through the same weights, then scipy's FID
    model, _, _ = load_inception(inception_file)
    w = setup.w[:3, None].expand(-1, setup.e4e.n_latent, -1)
    with torch.no_grad():
        generated = torch.from_numpy(np.stack(to_uint8(setup.e4e.generator.synthesis(w)))).permute(0, 3, 1, 2)
        (gen_features,) = model(generated.contiguous())
        real = torch.stack([torch.from_numpy(np.array(Image.open(real_dir / f"{i}.png"))).permute(2, 0, 1)
                            for i in range(3)])
        (real_features,) = model(real)
    # (the formula is checked against scipy above; a 2048-d scipy sqrtm would take half a minute)
    expected = frechet_distance(gen_features.double().numpy(), real_features.double().numpy())
    assert expected > 1e-3 and result.rows[0].fid.value == pytest.approx(expected, rel=1e-4)
    assert result.rows[1].fid.value != pytest.approx(result.rows[0].fid.value, rel=1e-6)  # the edit moved it


def test_inception_features_batch_by_size(inception_file):
    model, _, _ = load_inception(inception_file)
    batches = []
    model.register_forward_hook(lambda module, args, output: batches.append(tuple(args[0].shape)))
    collector = InceptionFeatures(model)
    for i, (size, value) in enumerate(((32, 10), (32, 200), (40, 90))):
        collector.add(i, np.full((size, size, 3), value, dtype=np.uint8))
    collector.flush()
    assert batches == [(2, 3, 32, 32), (1, 3, 40, 40)]  # one size per batch
    assert sorted(collector.out) == [0, 1, 2] and collector.out[0].shape == (FEATURE_DIM,)
    assert not torch.equal(collector.out[0], collector.out[1])


def test_command_json_and_report_carry_fid(setup, real_dir, inception_file, cli):  # noqa: F811
    report = setup.tmp / "report.html"
    code, out, err = cli(
        ["evaluate", "-e", setup.essences["alpha"], "-t", setup.targets["alpha"], "--sources", setup.latents,
         "-s", "1", "--max-sources", "2", "--json", "--report", report, "--fid", real_dir,
         "--fid-weights", inception_file, *_cli_models(setup)])
    assert code == 0, err
    data = json.loads(out)
    assert data["fid"]["real_images"] == 3 and data["fid"]["warning"]
    assert [(r["fid"]["n_generated"], r["fid"]["n_real"]) for r in data["rows"]] == [(2, 3), (2, 3)]
    assert all(math.isfinite(r["fid"]["value"]) for r in data["rows"])
    assert "not stable" in err
    page = report.read_text(encoding="utf-8")
    assert "<th>FID</th>" in page and "3 real image(s)" in page and "not stable" in page
    assert f"{data['rows'][1]['fid']['value']:.2f}" in page


def test_a_second_evaluation_reads_the_real_features_from_the_cache(setup, real_dir, inception_file, cli):  # noqa: F811
    args = ["evaluate", "-e", setup.essences["alpha"], "-t", setup.targets["alpha"], "--sources", setup.latents,
            "-s", "1", "--max-sources", "2", "--json", "--fid", real_dir, "--fid-weights", inception_file,
            *_cli_models(setup)]
    runs = []
    for extra in ([], [], ["--no-cache"]):
        code, out, err = cli([*args, *extra])
        assert code == 0, err
        runs.append(json.loads(out))
    assert [run["fid"]["real_cached"] for run in runs] == [0, 3, 0]
    first = [row["fid"]["value"] for row in runs[0]["rows"]]
    assert [row["fid"]["value"] for row in runs[1]["rows"]] == first  # the same features, read back exactly
    assert [row["fid"]["value"] for row in runs[2]["rows"]] == pytest.approx(first, rel=1e-6)
    code, out, _ = cli(["cache", "list", "--json"])
    assert code == 0 and [group["entries"] for group in json.loads(out)["features"]] == [3]


def test_missing_inception_weights_name_pull_weights(setup, real_dir, cli):  # noqa: F811
    code, out, err = cli(
        ["evaluate", "-e", setup.essences["alpha"], "-t", setup.targets["alpha"], "--sources", setup.latents,
         "--fid", real_dir, *_cli_models(setup)])
    assert code == 1 and out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "essencekit pull-weights inception-v3-fid" in lines[0] and "Traceback" not in err


def test_an_unreadable_real_image_is_one_line_naming_it(setup, real_dir, inception_file, cli):  # noqa: F811
    (real_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code, out, err = cli(
        ["evaluate", "-e", setup.essences["alpha"], "-t", setup.targets["alpha"], "--sources", setup.latents,
         "--fid", real_dir, "--fid-weights", inception_file, *_cli_models(setup)])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and out == "" and "Traceback" not in err
    assert "broken.png" in lines[-1] and len(lines) == 1, err


@pytest.mark.parametrize("where", ["missing", "empty", "file"])
def test_real_folder_must_hold_images(setup, where, cli):  # noqa: F811
    folder = setup.tmp / where
    if where == "empty":
        folder.mkdir()
        (folder / "readme.txt").write_text("no images")
    elif where == "file":
        folder.write_text("x")
    code, out, err = cli(
        ["evaluate", "-e", setup.essences["alpha"], "-t", setup.targets["alpha"], "--sources", setup.latents,
         "--fid", folder, *_cli_models(setup)])
    assert code == 2 and out == "" and "Traceback" not in err
    assert "Invalid value for '--fid'" in err and str(folder.name) in err


# --------------------------------------------------------------------------- the standard Inception features


def _tf1_resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """TensorFlow 1.x ``resize_bilinear`` (align_corners=False, no half-pixel centres), the
    resize of the TTUR reference's graph, written out from its definition: output pixel ``i``
    reads input position ``i * in / out``, blended linearly with its right neighbour (clamped at
    the edge); columns, then rows. In float32 throughout, as TensorFlow's kernel computes (float64
    positions would move a downscale's blend weights by up to 1e-5). ``images``: ``[N, C, H, W]``."""
    images = images.astype(np.float32)

    def taps(n_in: int):
        position = np.arange(size, dtype=np.float32) * np.float32(n_in / size)
        low = np.floor(position).astype(int)
        return low, np.minimum(low + 1, n_in - 1), position - low.astype(np.float32)

    top, bottom, dy = taps(images.shape[2])
    left, right, dx = taps(images.shape[3])
    upper, lower = images[:, :, top], images[:, :, bottom]
    upper = upper[..., left] + (upper[..., right] - upper[..., left]) * dx
    lower = lower[..., left] + (lower[..., right] - lower[..., left]) * dx
    return upper + (lower - upper) * dy[:, None]


@pytest.mark.parametrize("size", [64, 256, 333, 1024])
def test_inception_input_is_tensorflow_1x_resize_then_the_reference_scaling(inception_file, size):
    """What the Inception's first convolution receives from 8-bit images of any size: TF 1.x's
    bilinear resize to 299 (written out above from its definition, not pytorch-fid's
    half-pixel resize) and then ``(x - 128) / 128``, as the TTUR reference's graph does. A
    float64 position or a half-pixel offset would miss by far more than the tolerance."""
    model, _, _ = load_inception(inception_file)
    seen = []
    model.Conv2d_1a_3x3.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    pixels = np.random.default_rng(size).integers(0, 256, (1, 3, size, size), dtype=np.uint8)
    with torch.no_grad():
        model(torch.from_numpy(pixels))
    expected = (_tf1_resize_bilinear(pixels, 299) - 128) / 128
    assert seen[0].shape == (1, 3, 299, 299)
    np.testing.assert_allclose(seen[0].numpy(), expected, rtol=0, atol=2e-6)  # 1/8 of a level's 1/128


def test_inception_network_equals_pytorch_fids_on_the_same_weights(inception_file, tmp_path, mocker):
    """From the first convolution to the 2048 pool features, torch-fidelity's network (through
    ``load_inception``) equals pytorch-fid's FID Inception, an independent port of the same
    TensorFlow graph, given the same weights file: in float64 (rounded to float32 at the end, as
    torch-fidelity hands features back), on 299 px images (no resize). Batch-norm statistics are
    randomised so that a wrong epsilon or a missing layer would show."""
    from pytorch_fid import inception as pytorch_fid

    state = torch.load(inception_file, weights_only=True)
    generator = torch.Generator().manual_seed(3)
    for key, value in state.items():
        if ".bn." in key and value.is_floating_point():
            low, high = (0.5, 2.0) if key.endswith(("running_var", "weight")) else (-0.2, 0.2)
            state[key] = low + (high - low) * torch.rand(value.shape, generator=generator)
    weights = tmp_path / "inception-bn.pth"
    torch.save(state, weights)

    model, _, _ = load_inception(weights)
    model.double().feature_extractor_internal_dtype = torch.float64
    pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 299, 299), dtype=np.uint8))
    with torch.no_grad():
        (ours,) = model(pixels)

    mocker.patch.object(pytorch_fid, "load_state_dict_from_url", return_value=state)  # no download
    reference = pytorch_fid.InceptionV3([pytorch_fid.InceptionV3.BLOCK_INDEX_BY_DIM[FEATURE_DIM]],
                                        resize_input=False, normalize_input=False).double().eval()
    with torch.no_grad():
        (expected,) = reference((pixels.double() - 128) / 128)
    expected = expected.flatten(1)
    assert ours.shape == expected.shape == (2, FEATURE_DIM)
    assert expected.abs().max() > 1e-3  # not a vanishing random network
    torch.testing.assert_close(ours.double(), expected, rtol=1e-6, atol=1e-6 * float(expected.abs().max()))


# the real-image share of each rank of a torchrun job, put back together on every rank
SHARDED = """
import sys
import numpy as np
from pathlib import Path
from essencekit.backends import select_backend
from essencekit.distributed import ProcessGroup
from essencekit.evaluation.api import Evaluator
files = sorted(Path(sys.argv[1]).iterdir())
with ProcessGroup(select_backend("cpu")) as group:
    evaluator = Evaluator(group=group, fid_weights=sys.argv[2], judges=["ViT-B/32"])
    model, _, sha256 = evaluator.inception
    measured = evaluator._real_features(files, model, sha256, cache=True, progress=None)
    np.save(f"{sys.argv[3]}/rank{group.launch.rank}-features.npy", measured.features)
    Path(f"{sys.argv[3]}/rank{group.launch.rank}-cached.txt").write_text(str(measured.cached))
"""


def test_a_torchrun_job_shares_the_real_images_out(inception_file, tmp_path):
    """Under torchrun each process runs Inception on every other real image (5 images: 3 and
    2), and every process ends with all the features, in the files' order, as one process
    computes them; a second job reads them all from the cache."""
    folder = tmp_path / "real"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(np.random.default_rng(40 + i).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
            folder / f"{i}.png")
    script = tmp_path / "sharded.py"
    script.write_text(SHARDED)
    env = {**os.environ, "ESSENCEKIT_HOME": str(tmp_path / "home"), "PYTHONWARNINGS": "ignore"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    runs = []
    for run in ("first", "second"):
        (tmp_path / run).mkdir()
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                   str(script), str(folder), str(inception_file), str(tmp_path / run)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[:3000]
        runs.append([(np.load(tmp_path / run / f"rank{rank}-features.npy"),
                      int((tmp_path / run / f"rank{rank}-cached.txt").read_text())) for rank in (0, 1)])
    first, second = runs
    assert np.array_equal(first[0][0], first[1][0]) and first[0][0].shape == (5, FEATURE_DIM)
    assert [cached for _, cached in first] == [0, 0] and [cached for _, cached in second] == [5, 5]
    model, _, _ = load_inception(inception_file)
    with torch.no_grad():
        (expected,) = model(torch.stack([torch.from_numpy(np.array(Image.open(folder / f"{i}.png"))).permute(2, 0, 1)
                                         for i in range(5)]))
    np.testing.assert_allclose(first[0][0], expected.double().numpy(), rtol=1e-4,
                               atol=1e-4 * float(expected.abs().max()))
    assert np.array_equal(second[0][0], first[0][0]) and np.array_equal(second[1][0], first[0][0])


def test_a_person_watching_sees_the_real_images_counted(setup, real_dir, inception_file, cli, monkeypatch):  # noqa: F811
    """With a terminal on stderr: a bar over the real images (3 of 3) above the rendering count."""
    import io

    from rich.console import Console

    from essencekit.cli import evaluate_cmd

    screen = io.StringIO()
    monkeypatch.setattr(evaluate_cmd, "err", Console(file=screen, force_terminal=True, width=120))
    monkeypatch.setattr(evaluate_cmd, "progress_enabled", lambda quiet=False: True)
    code, out, err = cli(
        ["evaluate", "-e", setup.essences["alpha"], "-t", setup.targets["alpha"], "--sources", setup.latents,
         "-s", "1", "--max-sources", "2", "--json", "--fid", real_dir, "--fid-weights", inception_file,
         *_cli_models(setup)])
    assert code == 0, err
    shown = screen.getvalue()
    assert "FID real images" in shown and "3/3" in shown
    assert shown.rindex("FID real images") < shown.rindex("rendering and measuring")  # the real images come first


# `essencekit evaluate` with the tests' tiny CLIP variants registered, as a plugin would
TINY_EVALUATE = """
import sys
sys.path.insert(0, sys.argv.pop(1))  # the tests' folder, for conftest's tiny variants
import essencekit
from conftest import tiny_clip_variant, tiny_rn_variant
from essencekit import plugins

class TinyClips:
    @staticmethod
    @essencekit.hookimpl
    def register_clip_models(register):
        register(tiny_clip_variant())
        register(tiny_rn_variant())

plugins.register_plugin(TinyClips, "test-tiny-clips")
from essencekit.cli import main
main(sys.argv[1:])
"""


def test_evaluate_under_torchrun_prints_what_one_process_prints(setup, real_dir, inception_file, cli):  # noqa: F811
    """The whole command under torchrun (2 gloo processes): rank 0 prints the job's evaluation,
    every figure as one process computes it (FID included: the real images are split between
    the ranks), and nothing else prints it."""
    args = ["evaluate", "-e", setup.essences["alpha"], "-t", setup.targets["alpha"], "--sources", setup.latents,
            "-s", "1", "--json", "--fid", real_dir, "--fid-weights", inception_file, *_cli_models(setup)]
    code, out, err = cli(args)
    assert code == 0, err
    alone = json.loads(out)

    script = setup.tmp / "tiny_evaluate.py"
    script.write_text(TINY_EVALUATE)
    env = {**os.environ, "ESSENCEKIT_HOME": str(setup.tmp / "torchrun-home"), "PYTHONWARNINGS": "ignore"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
         str(Path(__file__).parent), *map(str, args)],
        env=env, capture_output=True, text=True, timeout=300, cwd=setup.tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"rows"') == 1  # one evaluation printed, by rank 0
    job = json.loads(done.stdout)
    assert job["sources"] == alone["sources"] and job["fid"]["real_images"] == alone["fid"]["real_images"] == 3
    assert job["fid"]["real_cached"] == 0  # its own, empty cache
    assert len(job["rows"]) == len(alone["rows"]) == 2
    for ours, theirs in zip(job["rows"], alone["rows"]):
        assert (ours["essence"], ours["strength"]) == (theirs["essence"], theirs["strength"])
        assert ours["identity"]["n"] == theirs["identity"]["n"] == 4
        assert ours["identity"]["mean"] == pytest.approx(theirs["identity"]["mean"], abs=1e-4)
        for judge in setup.judges:
            assert ours["target_similarity"][judge]["mean"] == pytest.approx(
                theirs["target_similarity"][judge]["mean"], abs=1e-4)
        assert ours["fid"]["value"] == pytest.approx(theirs["fid"]["value"], rel=1e-4)
