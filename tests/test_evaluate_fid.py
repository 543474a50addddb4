"""``essencekit evaluate --fid``: the Fréchet Inception Distance, on the tiny models and a
random-init FID Inception of the real architecture (no download: the real weights are checked
by benchmarks/fid_check.py where they are available)."""

from __future__ import annotations

import io
import json
import math

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
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    state = torch.random.get_rng_state()
    torch.manual_seed(7)
    original = FeatureExtractorInceptionV3.load_state_dict
    FeatureExtractorInceptionV3.load_state_dict = lambda self, state_dict, *a, **k: None  # keep the random init
    try:
        model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=empty)
        for module in model.modules():  # a variance-keeping init, so the 2048 features do not vanish
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    finally:
        FeatureExtractorInceptionV3.load_state_dict = original
        torch.random.set_rng_state(state)
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(model.state_dict(), path)
    return path


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
    notes = []
    result = evaluate(
        [setup.essences["alpha"]], [setup.targets["alpha"]], setup.latents, "1", encoder=setup.e4e, device="cpu",
        identity_model=ARCFACE, judges=setup.judges[:1], clip_weights={setup.judges[0]: setup.weights[setup.judges[0]]},
        align_target=False, fid=real_dir, fid_weights=inception_file, notify=notes.append, max_sources=3,
    )
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


def test_missing_inception_weights_name_pull_weights(setup, real_dir, cli):  # noqa: F811
    code, out, err = cli(
        ["evaluate", "-e", setup.essences["alpha"], "-t", setup.targets["alpha"], "--sources", setup.latents,
         "--fid", real_dir, *_cli_models(setup)])
    assert code == 1 and out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "essencekit pull-weights inception-v3-fid" in lines[0] and "Traceback" not in err


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
