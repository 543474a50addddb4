"""``essencekit evaluate`` on the tiny fixtures: the tiny e4e (64 px decoder), the tiny ArcFace
and two tiny random CLIP judges (a ViT and a ResNet)."""

from __future__ import annotations

import json
import math
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_rn_variant
from PIL import Image

import essencekit
from essencekit.clip import build_clip_model, load_clip
from essencekit.errors import OptionError
from essencekit.essence import Essence
from essencekit.evaluation.api import Evaluator, default_strengths, evaluate, to_signed
from essencekit.evaluation.metrics import clip_changes, mean_pairwise_cosine, paired_cosine, summarize
from essencekit.evaluation.report import render_html, write_report
from essencekit.models.arcface import load_identity_checkpoint
from essencekit.models.e4e import load_encoder_checkpoint
from essencekit.transfers.pipeline import to_uint8

FIXTURES = Path(__file__).parent / "fixtures"
E4E = FIXTURES / "tiny-e4e.pt"
ARCFACE = FIXTURES / "tiny-arcface.pth"

TINY_RN = tiny_rn_variant()


# --------------------------------------------------------------------------- the measures


def test_summary_is_mean_and_population_std():
    s = summarize([0.5, 1.0, 1.5])
    assert s.n == 3 and s.mean == pytest.approx(1.0) and s.std == pytest.approx(math.sqrt(1 / 6))
    assert summarize([]).mean is None and summarize([]).format() == "n/a"
    assert summarize([0.25]).format() == "0.250 ± 0.000"


def test_paired_cosine_against_rows_or_one_target():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    assert paired_cosine(a, a).tolist() == pytest.approx([1, 1, 1])
    assert paired_cosine(a, torch.tensor([[1.0, 0.0]])).tolist() == pytest.approx([1, 0, math.sqrt(0.5)])


def test_cosines_never_leave_the_unit_interval():
    """Rounding puts the cosine of parallel rows a hair above 1 (1.0000000000000002) for some
    rows on any CPU; with thousands of rows some always do, and a cosine above 1 must not show."""
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(4000, 234, generator=g, dtype=torch.float64)
    scales = 0.1 + 10 * torch.rand(4000, 1, generator=g, dtype=torch.float64)
    same_way = paired_cosine(rows, rows * scales)
    assert same_way.max().item() <= 1.0 and same_way.min().item() == pytest.approx(1.0)
    assert paired_cosine(rows, -rows * scales).min().item() >= -1.0
    for start in range(0, 4000, 50):  # groups of parallel changes: consistency is exactly 1 at most
        group = rows[start : start + 1] * scales[start : start + 50]
        assert mean_pairwise_cosine(group) <= 1.0


def test_consistency_is_the_mean_pairwise_cosine_of_the_changes():
    same = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.5, 0.0]])
    assert mean_pairwise_cosine(same) == pytest.approx(1.0)
    # pairs: (0,1) -1, (0,2) 0, (1,2) 0
    mixed = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    assert mean_pairwise_cosine(mixed) == pytest.approx(-1 / 3)
    assert mean_pairwise_cosine(same[:1]) is None
    assert mean_pairwise_cosine(torch.zeros(3, 2)) is None  # strength 0: no change to compare
    sources, edits = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    changes = clip_changes(edits, sources)
    assert torch.allclose(changes[0], torch.tensor([math.sqrt(0.5) - 1, math.sqrt(0.5)], dtype=torch.float64))


def test_default_strengths_follow_the_recommended_strength():
    assert default_strengths(1.0) == [0.5, 1.0, 1.5]
    assert default_strengths(2.0) == [1.0, 2.0, 3.0]
    assert default_strengths(0.0) == [1.0]


# --------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def tiny_rn_weights(tmp_path_factory) -> Path:
    from safetensors.torch import save_file

    state = torch.random.get_rng_state()
    torch.manual_seed(1)
    model = build_clip_model(TINY_RN)
    torch.random.set_rng_state(state)
    path = tmp_path_factory.mktemp("tiny-rn") / "tiny-rn.safetensors"
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture
def setup(tiny_clip_plugin, tiny_clip_weights, tiny_rn_weights, register_plugin, tmp_path, monkeypatch):
    class TinyRn:
        @staticmethod
        @essencekit.hookimpl
        def register_clip_models(register):
            register(TINY_RN)

    register_plugin(TinyRn, "test-tiny-rn")
    monkeypatch.chdir(tmp_path)
    e4e = load_encoder_checkpoint(E4E)
    gen = e4e.generator
    rng = torch.Generator().manual_seed(3)
    with torch.no_grad():
        w = gen.mapping(torch.randn(4, gen.style_dim, generator=rng), truncation=0.7)
    latents = tmp_path / "sources.pt"
    torch.save(w[:, None].expand(-1, gen.n_latent, -1).clone(), latents)
    essences = {}
    for name, scale, clip in (("alpha", 0.6, tiny_clip_plugin.name), ("beta", 0.4, None)):
        meta = {"name": name, "recommended_strength": "1.0"}
        if clip:
            meta["clip_model"] = clip
        direction = torch.randn(gen.n_latent, gen.style_dim, generator=rng) * scale
        essences[name] = Essence(direction, metadata=meta).save(tmp_path / f"{name}.pt")
    targets = {}
    for name, seed in (("alpha", 5), ("beta", 6)):
        pixels = np.random.default_rng(seed).integers(0, 256, (80, 72, 3), dtype=np.uint8)
        targets[name] = tmp_path / f"{name}-target.png"
        Image.fromarray(pixels).save(targets[name])
    judges = [tiny_clip_plugin.name, TINY_RN.name]
    weights = {tiny_clip_plugin.name: str(tiny_clip_weights), TINY_RN.name: str(tiny_rn_weights)}
    return types.SimpleNamespace(e4e=e4e, latents=latents, w=w, essences=essences, targets=targets, judges=judges,
                                 weights=weights, tmp=tmp_path)


def _evaluate(setup, **options):
    return evaluate(
        [setup.essences["alpha"], setup.essences["beta"]], [setup.targets["alpha"], setup.targets["beta"]],
        setup.latents, options.pop("strengths", "0.5,1"), encoder=setup.e4e, device="cpu",
        identity_model=ARCFACE, judges=setup.judges, clip_weights=setup.weights, align_target=False, **options,
    )


def test_evaluation_measures_what_the_paper_measures(setup):
    result = _evaluate(setup)
    assert [(r.essence, r.strength) for r in result.rows] == [
        ("alpha", 0.0), ("alpha", 0.5), ("alpha", 1.0), ("beta", 0.0), ("beta", 0.5), ("beta", 1.0)]
    assert len(result.sources) == 4 and not result.failures
    assert [e.extraction_clip for e in result.essences] == [setup.judges[0], "ViT-B/32"]

    # strength 0 is the sources themselves: identity exactly kept, no change to be consistent about
    baseline = result.rows[0]
    assert baseline.identity.mean == pytest.approx(1.0, abs=1e-6) and baseline.identity.std < 1e-6
    assert baseline.consistency == {name: None for name in setup.judges}
    # identity drops as the edit grows; every figure is a cosine
    alpha = result.rows[:3]
    assert alpha[2].identity.mean < alpha[1].identity.mean < 1.0
    for row in result.rows:
        for summary in (row.identity, row.identity_leak, *row.target_similarity.values()):
            assert summary.n == 4 and -1.0 <= summary.mean <= 1.0
        if row.strength:
            assert all(-1.0 <= c <= 1.0 for c in row.consistency.values())

    # recompute alpha at strength 1 independently: render, quantise as transfer does, embed
    arcface = load_identity_checkpoint(ARCFACE)
    judge = load_clip(setup.judges[1], "cpu", input_mode="raw", generator_size=64,
                      weights=setup.weights[setup.judges[1]])
    direction = essencekit.load_essence(setup.essences["alpha"]).direction
    w = setup.w[:, None].expand(-1, setup.e4e.n_latent, -1)
    with torch.no_grad():
        source = torch.cat([to_signed(Image.fromarray(a)) for a in to_uint8(setup.e4e.generator.synthesis(w))])
        edit = torch.cat([to_signed(Image.fromarray(a))
                          for a in to_uint8(setup.e4e.generator.synthesis(w + direction))])
        identity = paired_cosine(arcface.embed(edit), arcface.embed(source))
        target = judge.encode_target(Image.open(setup.targets["alpha"]))
        similarity = paired_cosine(judge.encode_generated(edit), target)
        consistency = mean_pairwise_cosine(clip_changes(judge.encode_generated(edit), judge.encode_generated(source)))
    assert alpha[2].identity.mean == pytest.approx(float(identity.mean()), abs=1e-5)
    assert alpha[2].identity.std == pytest.approx(float(identity.std(unbiased=False)), abs=1e-5)
    assert alpha[2].target_similarity[setup.judges[1]].mean == pytest.approx(float(similarity.mean()), abs=1e-5)
    assert alpha[2].consistency[setup.judges[1]] == pytest.approx(consistency, abs=1e-5)
    # the identity leak compares with the target's centre square (align_target=False)
    assert result.essences[0].target_face == "centre crop"


def test_default_strengths_max_sources_and_json(setup, mocker):
    from essencekit import cache, essence_mix

    loaded, hashed = mocker.spy(essence_mix, "load_essence"), mocker.spy(cache, "sha256_file")
    result = _evaluate(setup, strengths=None, max_sources=2)
    # each essence file is read and hashed once: its transfer runs reuse what was loaded
    assert loaded.call_count == 2
    assert sorted(c.args[0] for c in hashed.call_args_list if c.args[0] in setup.essences.values()) == sorted(
        Path(p) for p in (setup.essences["alpha"], setup.essences["beta"]))
    assert [r.strength for r in result.rows if r.essence == "alpha"] == [0.0, 0.5, 1.0, 1.5]
    assert len(result.sources) == 2
    data = json.loads(json.dumps(result.to_json()))
    assert data["sources"]["count"] == 2 and data["judges"] == setup.judges
    assert data["rows"][1]["target_similarity"][setup.judges[0]]["n"] == 2


def test_option_errors_before_any_work(setup):
    evaluator = Evaluator(encoder=setup.e4e, device="cpu", identity_model=ARCFACE, judges=setup.judges,
                          clip_weights=setup.weights)
    with pytest.raises(OptionError, match="each essence needs its target"):
        evaluator.evaluate([setup.essences["alpha"]], [], setup.latents)
    with pytest.raises(OptionError, match="^strengths takes a number") as error:
        evaluator.evaluate([setup.essences["alpha"]], [setup.targets["alpha"]], setup.latents, "1,x")
    assert error.value.parameter == "strengths"
    with pytest.raises(OptionError, match="max_sources must be") as error:  # the parameter, not a flag
        evaluator.evaluate([setup.essences["alpha"]], [setup.targets["alpha"]], setup.latents, max_sources=0)
    assert error.value.parameter == "max_sources"
    big = Essence(torch.zeros(18, 512)).save(setup.tmp / "big.pt")
    with pytest.raises(essencekit.EssencekitError, match="shape"):
        evaluator.evaluate([big], [setup.targets["alpha"]], setup.latents)
    with pytest.raises(OptionError, match="^clip_weights names nope, which is not among the judges") as error:
        Evaluator(judges=setup.judges, clip_weights={"nope": "x"})
    assert error.value.parameter == "clip_weights"
    with pytest.raises(OptionError, match="at least one CLIP judge") as error:
        Evaluator(judges=[])
    assert error.value.parameter == "judges"


def test_report_has_table_plot_and_grid(setup):
    result = _evaluate(setup, grid_sources=2)
    assert len(result.grid) == 2
    assert set(result.grid[0]["images"]) == {(None, 0.0), ("alpha", 0.5), ("alpha", 1.0), ("beta", 0.5), ("beta", 1.0)}
    page = render_html(result)
    assert page.count("<polyline") == 2 and page.count("<circle") == 6
    assert page.count("data:image/jpeg;base64,") == 10
    assert "alpha" in page and "identity leak" in page
    # reports are shared: they name an essence by its file, not by the folder it lives in
    assert [e.source for e in result.essences] == ["alpha.pt", "beta.pt"]
    assert str(setup.essences["alpha"]) not in page and str(setup.tmp) not in json.dumps(result.to_json()["essences"])
    path = write_report(result, setup.tmp / "r" / "report.html")
    written = path.read_text(encoding="utf-8")
    assert written.startswith("<!DOCTYPE html>") and written.count("data:image/jpeg;base64,") == 10
    assert not [p for p in path.parent.iterdir() if p.name != "report.html"]  # no temporary left


# --------------------------------------------------------------------------- the command


def _cli_models(setup) -> list:
    args = ["--encoder", E4E, "--identity-model", ARCFACE, "--clip", ",".join(setup.judges), "--backend", "cpu",
            "--no-align-target"]
    for name, path in setup.weights.items():
        args += ["--clip-weights", f"{name}={path}"]
    return args


def test_command_prints_json_and_writes_the_report(setup, capsys, cli):
    report = setup.tmp / "report.html"
    code, out, err = cli(
        ["evaluate", "-e", setup.essences["alpha"], "-t", setup.targets["alpha"], "--sources", setup.latents,
         "-s", "1", "--json", "--report", report, *_cli_models(setup)])
    assert code == 0, err
    data = json.loads(out)
    assert [row["strength"] for row in data["rows"]] == [0.0, 1.0]
    assert data["rows"][0]["identity"]["mean"] == pytest.approx(1.0, abs=1e-6)
    assert "<svg" in report.read_text(encoding="utf-8")


def test_command_table(setup, capsys, cli):
    code, out, err = cli(
        ["evaluate", "-e", setup.essences["beta"], "-t", setup.targets["beta"], "--sources", setup.latents,
         "-s", "0.5", "--max-sources", "2", *_cli_models(setup)])
    assert code == 0, err
    assert "identity" in out and "beta" in out and "2 source(s)" in out


@pytest.mark.parametrize(("extra", "code", "message"), [
    (["-t", "other.png"], 2, "each essence needs its target"),
    (["--clip-weights", "novalue"], 2, "Invalid value for '--clip-weights': give NAME=PATH"),
    (["--report", "r.txt"], 2, "Invalid value for '--report': the report is an .html file"),
    (["--max-sources", "0"], 2, "Invalid value for '--max-sources': max_sources must be at least 1, got 0"),
    (["--strength", "1,1"], 2, "twice"),
])
def test_command_usage_errors(setup, capsys, extra, code, message, cli):
    args = ["evaluate", "-e", setup.essences["alpha"], "-t", setup.targets["alpha"], "--sources", setup.latents,
            *_cli_models(setup), *extra]
    got, out, err = cli(args)
    assert got == code and message in err and "Traceback" not in err
    assert out == ""


def test_command_errors_name_the_file(setup, capsys, cli):
    base = ["evaluate", "-e", setup.essences["alpha"], "-t", setup.targets["alpha"]]
    code, _, err = cli([*base, "--sources", setup.tmp / "nowhere", *_cli_models(setup)])
    assert code == 1 and "nowhere" in err
    models = _cli_models(setup)
    models[models.index("--identity-model") + 1] = FIXTURES / "tiny-stylegan2.pt"
    code, _, err = cli([*base, "--sources", setup.latents, *models])
    assert code == 1 and "tiny-stylegan2.pt" in err and "Traceback" not in err
    (setup.tmp / "bad.png").write_bytes(b"not an image")
    code, _, err = cli(["evaluate", "-e", setup.essences["alpha"], "-t", setup.tmp / "bad.png",
                         "--sources", setup.latents, *_cli_models(setup)])
    assert code == 1 and "bad.png" in err
