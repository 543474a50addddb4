"""Richer targets for ``extract``: several photos of one target, a target in words, and both
(issue 16), on the tiny generator and tiny random open_clip models."""

from __future__ import annotations

import hashlib
import json
import types
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from conftest import save_random_clip_weights
from PIL import Image

import essencekit
from essencekit.clip import ClipVariant, build_clip_model, load_clip, tokenize
from essencekit.essence import load_essence
from essencekit.extraction import api as extraction_api
from essencekit.extraction.targets import combine

FIXTURES = Path(__file__).parent / "fixtures"
GENERATOR = FIXTURES / "tiny-stylegan2.pt"
TEXT_CLIP = "test-tiny-vit-text"


def _photo(path: Path, seed: int, size=(90, 70)) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def text_variant() -> ClipVariant:
    """A tiny open_clip ViT whose text tower takes open_clip's real tokenizer (49,408 tokens)."""
    from conftest import tiny_clip_variant

    base = tiny_clip_variant()
    config = dict(base.open_clip_config)
    config["text_cfg"] = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
    return ClipVariant(name=TEXT_CLIP, open_clip_config=config, weights="clip-test-tiny-vit-text",
                       mean=base.mean, std=base.std)


@pytest.fixture(scope="module")
def text_weights(tmp_path_factory) -> Path:
    return save_random_clip_weights(text_variant(), 2, tmp_path_factory.mktemp("tiny-text") / "tiny-vit-text.safetensors")


@pytest.fixture
def setup(register_plugin, text_weights, tmp_path, monkeypatch):
    variant = text_variant()

    class TextClip:
        @staticmethod
        @essencekit.hookimpl
        def register_clip_models(register):
            register(variant)

    register_plugin(TextClip, "test-tiny-text-clip")
    monkeypatch.chdir(tmp_path)
    photos = tmp_path / "obama"
    photos.mkdir()
    paths = [_photo(photos / f"obama{i}.png", seed=10 + i) for i in (1, 2, 3)]
    models = ["--generator", GENERATOR, "--clip", TEXT_CLIP, "--clip-weights", text_weights]
    quick = ["--steps", "2", "--num-sources", "2", "--held-out", "0", "--restarts", "1", "--init", "random",
             "--seed", "1"]
    return types.SimpleNamespace(variant=variant, weights=text_weights, folder=photos, photos=paths, models=models,
                                 quick=quick, tmp=tmp_path)


@pytest.fixture
def captured(monkeypatch):
    """The target embedding every optimisation receives (the loss's target)."""
    seen = []
    original = extraction_api.optimise

    def spy(generator, encoder, sources, target, init, options, **kwargs):
        seen.append(target.detach().clone().cpu())
        return original(generator, encoder, sources, target, init, options, **kwargs)

    monkeypatch.setattr(extraction_api, "optimise", spy)
    return seen


def _clip(setup, text=False):
    return load_clip(TEXT_CLIP, "cpu", input_mode="raw", generator_size=64, weights=setup.weights, text=text)


def _open_clip_model(setup):
    """The same weights in open_clip's own CLIP class: the independent computation."""
    from safetensors.torch import load_file

    model = open_clip.model.CLIP(**setup.variant.open_clip_config)
    model.load_state_dict(load_file(str(setup.weights)))
    return model.eval()


# --------------------------------------------------------------------------- several photos


def test_several_photos_make_one_essence_towards_the_normalised_mean(setup, captured, cli):
    output = setup.tmp / "obama.pt"
    code, out, err = cli(["extract", *setup.photos, "-o", output, *setup.models, *setup.quick, "--json"])
    assert code == 0, err
    assert len(json.loads(out)["essences"]) == 1 and len(captured) == 1
    clip = _clip(setup)
    embeddings = torch.cat([clip.encode_target(Image.open(p)) for p in setup.photos])
    expected = F.normalize(F.normalize(embeddings, dim=-1).mean(0, keepdim=True), dim=-1)
    assert torch.allclose(captured[0], expected, atol=1e-6)

    meta = load_essence(output).metadata
    target = json.loads(meta["target"])
    assert [p["file"] for p in target["photos"]] == ["obama1.png", "obama2.png", "obama3.png"]
    assert [p["sha256"] for p in target["photos"]] == [_sha256(p) for p in setup.photos]
    assert json.loads(meta["target_sha256"]) == [_sha256(p) for p in setup.photos]
    assert target["text"] is None and "normalised mean" in target["combination"] and meta["name"] == "obama"


def test_the_mean_target_is_closer_to_the_photos_than_any_single_photo(setup):
    """The invariant behind "it helps": the normalised mean is the unit vector with the highest
    mean cosine to the photos, so it beats every single photo's embedding at that."""
    clip = _clip(setup)
    unit = F.normalize(torch.cat([clip.encode_target(Image.open(p)) for p in setup.photos]), dim=-1)
    mean = combine(unit, None, 0.0)
    to_mean = (unit @ mean.T).mean()
    for j in range(len(setup.photos)):
        assert to_mean >= (unit @ unit[j]).mean() - 1e-6


def test_a_folder_or_a_glob_is_one_target_and_a_folder_output_keeps_one_essence_each(setup, captured, cli):
    code, _, err = cli(["extract", setup.folder, *setup.models, *setup.quick])
    assert code == 0, err
    folder_essence = load_essence(setup.tmp / "obama.pt")
    assert len(json.loads(folder_essence.metadata["target"])["photos"]) == 3
    code, _, err = cli(["extract", str(setup.folder / "obama*.png"), "-o", setup.tmp / "glob.safetensors",
                        *setup.models, *setup.quick])
    assert code == 0, err
    assert torch.equal(captured[0], captured[1])  # the same three photos, the same target
    assert load_essence(setup.tmp / "glob.safetensors").direction.shape == (10, 64)

    each = setup.tmp / "each"  # -o a folder: one essence per photo, a folder argument's photos too
    code, _, err = cli(["extract", setup.folder, "-o", each, *setup.models, *setup.quick])
    assert code == 0, err
    assert sorted(p.name for p in each.iterdir()) == ["obama1.pt", "obama2.pt", "obama3.pt"]
    single = load_essence(each / "obama1.pt").metadata
    assert single["target_file"] == "obama1.png" and single["target_sha256"] == _sha256(setup.photos[0])
    clip = _clip(setup)
    assert torch.allclose(captured[2], clip.encode_target(Image.open(setup.photos[0])), atol=1e-6)  # as always


def test_python_api_takes_a_list_of_photos(setup, captured):
    clip = _clip(setup)
    essence = essencekit.extract(setup.photos[:2], generator=GENERATOR, clip=clip, seed=0, steps=1, num_sources=2,
                                 held_out=0, restarts=1, init="random")
    unit = F.normalize(torch.cat([clip.encode_target(Image.open(p)) for p in setup.photos[:2]]), dim=-1)
    assert torch.allclose(captured[0], F.normalize(unit.mean(0, keepdim=True), dim=-1), atol=1e-6)
    assert len(json.loads(essence.metadata["target"])["photos"]) == 2


def test_the_encoder_variant_averages_the_photos_directions(setup):
    from essencekit.essence_encoder import EssenceEncoder
    from essencekit.extraction.encoder_method import extract_with_encoder
    from essencekit.models.e4e import load_encoder_checkpoint

    model = EssenceEncoder(load_encoder_checkpoint(FIXTURES / "tiny-e4e.pt").encoder).eval()
    # the per-photo directions: one essence per photo
    each = torch.stack([e.direction for e in extract_with_encoder(setup.photos, model, device="cpu", align="whole")])
    (one,) = extract_with_encoder(setup.photos, model, device="cpu", align="whole", combine=True, name="obama")
    assert each.shape[0] == 3 and not torch.allclose(each[0], each[1])
    assert torch.allclose(one.direction, each.mean(0), atol=1e-6)
    assert json.loads(one.metadata["target_sha256"]) == [_sha256(p) for p in setup.photos]
    assert one.metadata["name"] == "obama" and "mean" in json.loads(one.metadata["target"])["combination"]


# --------------------------------------------------------------------------- a target in words


def test_the_text_tower_is_loaded_only_for_text(setup):
    assert not _clip(setup).has_text and _clip(setup).text is None
    clip = _clip(setup, text=True)
    assert clip.has_text
    text = "a portrait of the Joker"
    tokens = open_clip.tokenizer.tokenize([text], context_length=16)
    assert torch.equal(tokenize(text, setup.variant), tokens)  # open_clip's tokenizer, the variant's length
    expected = _open_clip_model(setup).encode_text(tokens)
    assert torch.allclose(clip.encode_text(text), expected, atol=1e-5)
    with pytest.raises(essencekit.EssencekitError, match="text tower"):
        _clip(setup).encode_text(text)


def test_a_text_target_reaches_the_loss_through_the_text_encoder(setup, captured, cli):
    output = setup.tmp / "joker-text.pt"
    text = "a portrait of the Joker"
    code, _, err = cli(["extract", "--text", text, "-o", output, *setup.models, *setup.quick[:-4],
                        "--init", "auto", "--seed", "1"])
    assert code == 0, err
    assert "no photo to invert" in err  # with a text alone every start is random, and it says so
    expected = F.normalize(_open_clip_model(setup).encode_text(open_clip.tokenize([text], context_length=16)), dim=-1)
    assert torch.allclose(captured[0], expected, atol=1e-5)
    meta = load_essence(output).metadata
    assert meta["target_text"] == text and meta["target_file"] == ""
    assert json.loads(meta["target"]) == {"photos": [], "text": text, "text_weight": 1.0,
                                          "combination": "the text's normalised CLIP text embedding"}
    assert json.loads(meta["restarts"])[0]["init"] == "random"


def test_photos_and_text_combine_by_the_normalised_weighted_mean(setup, captured, cli):
    text = "a portrait of the Joker"
    output = setup.tmp / "mix.pt"
    code, _, err = cli(["extract", *setup.photos[:2], "--text", text, "--text-weight", "0.25", "-o", output,
                        *setup.models, *setup.quick])
    assert code == 0, err
    clip = _clip(setup)
    unit = F.normalize(torch.cat([clip.encode_target(Image.open(p)) for p in setup.photos[:2]]), dim=-1)
    photo = F.normalize(unit.mean(0, keepdim=True), dim=-1)
    words = F.normalize(_open_clip_model(setup).encode_text(open_clip.tokenize([text], context_length=16)), dim=-1)
    assert torch.allclose(captured[0], F.normalize(0.75 * photo + 0.25 * words, dim=-1), atol=1e-5)
    target = json.loads(load_essence(output).metadata["target"])
    assert target["text"] == text and target["text_weight"] == 0.25 and len(target["photos"]) == 2


@pytest.mark.parametrize(("args", "flag"), [
    (["--text", "   "], "--text"),
    (["--text", "joker", "--text-weight", "1.5"], "--text-weight"),
    (["--text", "joker", "--text-weight", "nan"], "--text-weight"),
    (["PHOTO", "--text-weight", "0.5"], "--text-weight"),
    (["--text", "joker", "--method", "encoder"], "--text"),
    (["--text", "joker", "--init", "inversion"], "--init"),
    ([], "Invalid value for 'TARGET"),
])
def test_bad_target_inputs_are_usage_errors_naming_the_flag(setup, cli, args, flag):
    args = [str(setup.photos[0]) if a == "PHOTO" else a for a in args]
    code, out, err = cli(["extract", *args, "-o", setup.tmp / "x.pt", *setup.models])
    assert code == 2, err
    assert flag in err and "Traceback" not in err
    assert not (setup.tmp / "x.pt").exists()


# --------------------------------------------------------------------------- measured with evaluate


def test_n_photos_against_each_photo_measured_by_evaluate_on_held_out_sources(setup, register_plugin, tmp_path):
    """The procedure of docs/extract.md ("Does a multi-photo target help?") on the tiny models:
    one essence from photos 1-2 and one from each of them, measured by ``evaluate`` on held-out
    source latents against photo 3 (used by no essence), the second CLIP as judge. On random
    tiny models the comparison itself means nothing, so what is asserted is what must hold
    whatever the weights: the judge is not the CLIP that guided, every essence is measured on the
    same held-out sources and held-out target (identical strength-0 baselines), and the figures
    are cosines."""
    from conftest import tiny_rn_variant

    from essencekit.extraction.api import Extractor
    from essencekit.extraction.settings import ExtractSettings

    judge = tiny_rn_variant()

    class Judge:
        @staticmethod
        @essencekit.hookimpl
        def register_clip_models(register):
            register(judge)

    register_plugin(Judge, "test-tiny-rn-judge")
    judge_weights = save_random_clip_weights(judge, 1, tmp_path / "rn.safetensors")

    extractor = Extractor(generator=GENERATOR, clip=_clip(setup), device="cpu")
    settings = ExtractSettings(steps=2, num_sources=2, held_out=0, restarts=1, init="random")
    paths = {}
    for name, target in (("both", setup.photos[:2]), ("photo1", setup.photos[0]), ("photo2", setup.photos[1])):
        paths[name] = extractor.run(target, settings, seed=0, name=name).save(tmp_path / f"{name}.pt")
    gen = extractor.generator
    with torch.no_grad():  # held-out sources: another seed than the extraction's sampled sources
        w = gen.mapping(torch.randn(3, gen.style_dim, generator=torch.Generator().manual_seed(99)), truncation=0.7)
    latents = tmp_path / "held-out.pt"
    torch.save(w[:, None].expand(-1, gen.n_latent, -1).clone(), latents)

    result = essencekit.evaluate(
        list(paths.values()), [setup.photos[2]] * 3, latents, "1", generator=GENERATOR,
        encoder=FIXTURES / "tiny-e4e.pt", device="cpu", identity_model=FIXTURES / "tiny-arcface.pth",
        judges=[judge.name], clip_weights={judge.name: str(judge_weights)}, align_target=False,
    )
    assert [e.extraction_clip for e in result.essences] == [TEXT_CLIP] * 3  # guided by one CLIP, judged by another
    rows = {(r.essence, r.strength): r for r in result.rows}
    assert set(rows) == {(n, s) for n in paths for s in (0.0, 1.0)}
    baseline = rows[("both", 0.0)].target_similarity[judge.name].mean
    for name in paths:
        assert rows[(name, 0.0)].target_similarity[judge.name].mean == pytest.approx(baseline, abs=1e-6)
        assert rows[(name, 0.0)].identity.mean == pytest.approx(1.0, abs=1e-6)
        edited = rows[(name, 1.0)]
        assert edited.identity.n == 3 and -1.0 <= edited.identity.mean <= 1.0
        assert -1.0 <= edited.target_similarity[judge.name].mean <= 1.0


def test_text_towers_of_the_builtins_and_of_the_resnet_family():
    """ViT-B/32 and RN50 take open_clip's tokenizer; an RN text tower encodes as open_clip does;
    a text tower with too small a vocabulary is refused in one line."""
    from conftest import tiny_rn_variant

    from essencekit.clip import _tokenizer_problem, build_clip_towers, get_variant

    for name in ("ViT-B/32", "RN50"):
        variant = get_variant(name)
        assert _tokenizer_problem(variant) == "" and tokenize("a face", variant).shape == (1, 77)
    small = tiny_rn_variant()
    torch.manual_seed(3)
    with pytest.raises(essencekit.EssencekitError, match="vocabulary of 64 tokens") as error:
        build_clip_towers(small, build_clip_model(small).state_dict(), text=True)
    assert "\n" not in str(error.value)
    config = dict(small.open_clip_config)
    config["text_cfg"] = {**config["text_cfg"], "vocab_size": 49408}
    rn = ClipVariant(name="test-tiny-rn-text", open_clip_config=config, weights="x", mean=small.mean, std=small.std)
    model = build_clip_model(rn).eval()
    visual, text = build_clip_towers(rn, model.state_dict(), text=True)
    tokens = open_clip.tokenize(["a portrait of the Joker"], context_length=8)
    assert torch.allclose(text(tokens), model.encode_text(tokens), atol=1e-6)


def test_a_text_longer_than_clip_reads_is_cut_and_said(setup):
    from essencekit.extraction.targets import resolve_target, target_embedding

    notes = []
    text = "a portrait of the Joker with green hair, a purple suit, white make-up and a red smile"  # > 16 tokens
    embedding = target_embedding(_clip(setup, text=True), resolve_target(None, text=text), notes.append)
    assert embedding.shape == (1, 32) and len(notes) == 1 and "cut off" in notes[0]


def test_the_encoder_method_on_the_command_line_makes_one_essence_of_several_photos(setup, cli, monkeypatch):
    from essencekit.essence_encoder import EssenceEncoder
    from essencekit.extraction import encoder_method
    from essencekit.models.e4e import load_encoder_checkpoint

    model = EssenceEncoder(load_encoder_checkpoint(FIXTURES / "tiny-e4e.pt").encoder).eval()
    monkeypatch.setattr("essencekit.essence_encoder.load_essence_encoder", lambda path: model)
    output = setup.tmp / "enc.pt"
    code, out, err = cli(["extract", *setup.photos, "-o", output, "--method", "encoder", "--encoder", GENERATOR,
                          "--no-align", "--json"])
    assert code == 0, err
    assert len(json.loads(out)["essences"]) == 1
    meta = load_essence(output).metadata
    assert json.loads(meta["target_sha256"]) == [_sha256(p) for p in setup.photos] and meta["name"] == "enc"
    singles = [encoder_method.extract_with_encoder([p], model, device="cpu", align="whole")[0].direction
               for p in setup.photos]
    assert torch.allclose(load_essence(output).direction, torch.stack(singles).mean(0), atol=1e-5)
