"""``essencekit transfer`` and ``essencekit invert`` end to end, on the tiny e4e fixture (its
64 px embedded generator, 256 px input) and scikit-image's astronaut photo.

Detection costs about 0.3 s a photo with dlib (and a second to load its model once): the photos
are made once per module, and the tests that only need crops use --no-align.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import essencekit
import essencekit.transfers
from essencekit.errors import EssencekitError
from essencekit.essence import Essence
from essencekit.transfers import Transferrer
from essencekit.transfers.writing import read_metadata

FIXTURES = Path(__file__).parent / "fixtures"
E4E = FIXTURES / "tiny-e4e.pt"


def _dlib_usable() -> bool:
    from essencekit_builtins.aligners import DlibAligner

    return DlibAligner().availability()[0]


needs_dlib = pytest.mark.skipif(not _dlib_usable(), reason="dlib-bin and face-recognition-models are not installed")


def _lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """astro.png, a smaller copy whose face is too small, and two astronauts side by side."""
    data = pytest.importorskip("skimage.data")
    folder = tmp_path_factory.mktemp("photos")
    astronaut = Image.fromarray(data.astronaut())
    astronaut.save(folder / "astro.png")
    astronaut.resize((256, 256), Image.LANCZOS).save(folder / "small.png")
    canvas = Image.new("RGB", (512 + 640, 640), (255, 255, 255))
    canvas.paste(astronaut, (0, 64))
    canvas.paste(astronaut.resize((640, 640), Image.LANCZOS), (512, 0))
    canvas.save(folder / "two.png")
    return folder


@pytest.fixture(scope="module")
def essence_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("essences")
    gen = torch.Generator().manual_seed(0)
    paths = {}
    for name in ("tiny", "other"):
        essence = Essence(torch.randn(10, 64, generator=gen) * 0.5, metadata={"name": name})
        paths[name] = essence.save(folder / f"{name}.pt")
    paths["big"] = Essence(torch.zeros(18, 512), metadata={"generator": "stylegan2-ffhq"}).save(folder / "big.pt")
    return paths


@pytest.fixture(scope="module")
def models() -> Transferrer:
    """The tiny models, loaded once for the module's API tests."""
    return Transferrer(encoder=E4E, device="cpu")


@pytest.fixture
def crops(tmp_path) -> Path:
    """Three random 'aligned crops' (for --no-align runs, which need no detection)."""
    folder = tmp_path / "crops"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name in ("c1.png", "c2.png", "c3.png"):
        Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(folder / name)
    return folder


# --------------------------------------------------------------------------- paste-back


@needs_dlib
def test_strength_zero_gives_the_photo_back(models, photos, essence_files):
    photo = _pixels(photos / "astro.png")
    run = models.transfer(photos / "astro.png", str(essence_files["tiny"]), "0,1")
    zero, one = [r.image for r in run]
    # difference mode (the default): the whole photo, bit for bit
    assert np.array_equal(np.asarray(zero), photo)
    quad = next(iter(models.invert(photos / "astro.png"))).transform["quad"]
    x0, y0 = np.floor(np.min(quad, axis=0)).astype(int)
    x1, y1 = np.ceil(np.max(quad, axis=0)).astype(int)
    outside = np.ones(photo.shape[:2], bool)
    outside[max(y0, 0):y1, max(x0, 0):x1] = False
    edited = np.asarray(one)
    assert np.array_equal(edited[outside], photo[outside]) and not np.array_equal(edited, photo)
    # pasting the edited image itself: outside the face's square the photo is untouched too
    run = models.transfer(photos / "astro.png", str(essence_files["tiny"]), 0, paste="edited")
    pasted = np.asarray(next(iter(run)).image)
    assert np.array_equal(pasted[outside], photo[outside]) and not np.array_equal(pasted, photo)


@needs_dlib
def test_several_faces_each_get_their_edit(models, photos, essence_files, tmp_path, mocker):
    from essencekit.models.e4e import E4E as E4EModel

    out = tmp_path / "out"
    largest = list(models.transfer(photos / "two.png", str(essence_files["tiny"]), output=out / "one", crops=True))
    assert [r.output.name for r in largest] == ["two_tiny.png"]
    invert = mocker.spy(E4EModel, "invert")
    results = list(models.transfer(photos / "two.png", str(essence_files["tiny"]), output=out, faces="all", crops=True))
    assert [r.output.name for r in results] == ["two_face0_tiny.png", "two_face1_tiny.png"]
    assert _pixels(results[0].output).shape == (64, 64, 3)
    # face 0 (the larger astronaut) was cached by the first run: only face 1 is inverted now
    assert invert.call_count == 1 and invert.call_args.args[1].shape[0] == 1
    photo = _pixels(photos / "two.png")
    [whole] = models.transfer(photos / "two.png", str(essence_files["tiny"]), output=out, faces="all")
    assert whole.faces == 2 and whole.output.name == "two_tiny.png"
    changed = np.any(_pixels(whole.output) != photo, axis=2)
    assert changed[:, :512].any() and changed[:, 512:].any()  # both astronauts, in one output
    meta = read_metadata(whole.output)
    assert meta["faces"] == [0, 1] and meta["essence"] == "tiny" and meta["paste"] == "difference"
    assert meta["essencekit_version"] == essencekit.__version__


# --------------------------------------------------------------------------- the W+ cache


@needs_dlib
def test_a_second_essence_skips_detection_and_inversion(models, photos, essence_files, tmp_path, mocker):
    from essencekit import faces as faces_module
    from essencekit.models.e4e import E4E as E4EModel

    first = list(models.transfer(photos / "astro.png", str(essence_files["tiny"]), output=tmp_path / "a", grid=True))
    assert [r.status for r in first] == ["written", "written"]
    detect = mocker.spy(faces_module, "align_faces")
    invert = mocker.spy(E4EModel, "invert")
    second = list(models.transfer(photos / "astro.png", str(essence_files["other"]), output=tmp_path / "b", crops=True))
    assert detect.call_count == 0 and invert.call_count == 0
    assert [r.output.name for r in second] == ["astro_other.png"]
    # the photo is not even decoded for crops from the cache; with --no-cache everything runs again
    list(models.transfer(photos / "astro.png", str(essence_files["other"]), output=tmp_path / "c", cache=False))
    assert detect.call_count == 1 and invert.call_count == 1


# --------------------------------------------------------------------------- the command line


@needs_dlib
def test_bad_inputs_are_reported_and_the_run_goes_on(photos, essence_files, tmp_path, capsys, cli):
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.png").write_bytes((photos / "astro.png").read_bytes())
    (src / "small.png").write_bytes((photos / "small.png").read_bytes())
    (src / "empty.jpg").write_bytes(b"")
    (src / "text.png").write_text("not an image")
    data = (photos / "astro.png").read_bytes()
    (src / "truncated.png").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (2000, 1000), (90, 90, 90)).save(src / "huge.png")
    Image.new("RGB", (300, 200), (120, 130, 140)).save(src / "wall.png")
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    out = tmp_path / "out"
    code, stdout, stderr = cli(
        ["transfer", src, "-e", essence_files["tiny"], "-o", out, "--encoder", E4E, "--backend", "cpu",
         "--max-pixels", 1_000_000, "--json"])
    assert code == 1
    lines = {Path(r["source"]).name: r for r in _lines(stdout)}
    assert lines["good.png"]["status"] == "written" and (out / "good_tiny.png").is_file()
    reasons = {name: r.get("reason", "") for name, r in lines.items() if r["status"] == "failed"}
    assert "0 bytes" in reasons["empty.jpg"]
    assert "not an image" in reasons["text.png"]
    assert "truncated" in reasons["truncated.png"]
    assert "2000x1000" in reasons["huge.png"] and "raise --max-pixels" in reasons["huge.png"]
    assert "face too small to invert: 85 px" in reasons["small.png"]
    assert "no face found" in reasons["wall.png"]
    assert "1 files written" in stderr and "6 failed" in stderr
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before  # inputs never modified
    assert sorted(p.name for p in out.iterdir()) == ["good_tiny.png"]


def test_names_never_collide(crops, essence_files, tmp_path, capsys, cli):
    Image.open(crops / "c1.png").save(crops / "c1.jpg", quality=95)
    out = tmp_path / "out"
    code, stdout, stderr = cli(
        ["transfer", crops / "c1.png", crops / "c1.jpg", "--no-align", "-e", essence_files["tiny"], "-e",
         f"{essence_files['other']}@0.5", "-s", "0.5,1", "-o", out, "--encoder", E4E, "--backend", "cpu",
         "--format", "webp", "--quality", "90"])
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "c1_jpg_tiny+other_s0.5.webp", "c1_jpg_tiny+other_s1.webp", "c1_png_tiny+other_s0.5.webp",
        "c1_png_tiny+other_s1.webp",
    ]
    meta = read_metadata(out / "c1_png_tiny+other_s0.5.webp")
    assert meta["strength"] == 0.5 and meta["effective_strengths"] == [0.5, 0.25]
    assert [e["weight"] for e in meta["essences"]] == [1.0, 0.5]


def test_existing_outputs_are_refused_kept_or_replaced_and_runs_resume(crops, essence_files, tmp_path, capsys,
                                                                      monkeypatch, cli):
    out = tmp_path / "out"
    args = ["transfer", crops, "--no-align", "-e", essence_files["tiny"], "-o", out, "--encoder", E4E,
            "--backend", "cpu", "--batch-size", 1]
    # Ctrl-C while the second file is being written: the first stays, the second leaves nothing
    saves = []
    real_save = Image.Image.save

    def interrupted_save(self, fp, *a, **k):
        saves.append(fp)
        if len(saves) == 2:
            Path(fp).write_bytes(b"half a png")
            raise KeyboardInterrupt
        return real_save(self, fp, *a, **k)

    monkeypatch.setattr(Image.Image, "save", interrupted_save)
    code, _, stderr = cli(args)
    monkeypatch.setattr(Image.Image, "save", real_save)
    assert code == 130 and "--skip-existing" in stderr
    assert sorted(p.name for p in out.iterdir()) == ["c1_tiny.png"]  # no temporary or partial file
    first = (out / "c1_tiny.png").stat().st_mtime_ns

    code, _, stderr = cli(args)
    assert code == 1 and "already exists" in stderr and "overwrite to replace" in stderr
    code, stdout, _ = cli([*args, "--skip-existing", "--json"])
    assert code == 0
    assert [r["status"] for r in _lines(stdout)] == ["skipped", "written", "written"]
    assert (out / "c1_tiny.png").stat().st_mtime_ns == first
    code, stdout, _ = cli([*args, "--overwrite", "--json"])
    assert code == 0 and [r["status"] for r in _lines(stdout)] == ["written"] * 3
    code, _, stderr = cli([*args, "--overwrite", "--skip-existing"])
    assert code == 2 and "exclude each other" in stderr


def test_usage_errors_exit_2(crops, essence_files, capsys, cli):
    base = ["transfer", crops, "--no-align", "-e", essence_files["tiny"], "--encoder", E4E, "--backend", "cpu"]
    for extra, message in ((["--layers", "12"], "Invalid value for '--layers': "),
                           (["--strength", "x"], "Invalid value for '--strength' / '-s': "),
                           (["--faces", "some"], "some")):
        code, _, stderr = cli([*base, *extra])
        assert code == 2 and message in stderr, stderr


def test_a_bad_quality_names_the_parameter_in_python_and_the_flag_on_the_command_line(crops, essence_files, capsys, cli):
    from essencekit.errors import OptionError

    models = Transferrer(encoder=E4E, device="cpu")
    with pytest.raises(OptionError, match="^quality must be from 1 to 100, got 0$") as error:
        models.transfer(crops, str(essence_files["tiny"]), align=False, format="jpg", quality=0)
    assert error.value.parameter == "quality"  # a Python caller has no flags
    code, _, stderr = cli(["transfer", crops, "--no-align", "-e", essence_files["tiny"], "--encoder", E4E,
                            "--backend", "cpu", "--format", "jpg", "--quality", "0"])
    assert code == 2 and "Invalid value for '--quality'" in stderr


def test_an_essence_for_another_generator_is_refused(crops, essence_files, capsys, cli):
    code, _, stderr = cli(["transfer", crops, "--no-align", "-e", essence_files["big"], "--encoder", E4E])
    assert code == 1
    assert "shape [18, 512]" in stderr and "takes [10, 64]" in stderr and "another generator" in stderr


@needs_dlib
def test_invert_writes_latents_that_transfer_accepts(photos, essence_files, tmp_path, capsys, mocker, cli):
    from safetensors import safe_open

    from essencekit.cache import sha256_file

    latents = tmp_path / "latents"
    code, stdout, stderr = cli(["invert", photos / "astro.png", "-o", latents, "--encoder", E4E, "--json"])
    assert code == 0, stderr
    [record] = _lines(stdout)
    path = latents / "astro.safetensors"
    assert record["output"] == str(path)
    with safe_open(str(path), framework="pt") as handle:
        w = handle.get_tensor("w_plus")
        meta = handle.metadata()
    assert w.shape == (10, 64)
    assert meta["source_file"] == "astro.png" and meta["source_sha256"] == sha256_file(photos / "astro.png")
    assert meta["face_index"] == "0" and len(json.loads(meta["quad"])) == 4
    # as a source: a crop from the latent (no photo to paste into), and no encoder work
    invert = mocker.spy(essencekit.models.e4e.E4E, "invert")
    out = tmp_path / "out"
    code, stdout, stderr = cli(["transfer", latents, "-e", essence_files["tiny"], "-o", out, "--encoder", E4E,
                                 "--json"])
    assert code == 0, stderr
    assert [r["output"] for r in _lines(stdout)] == [str(out / "astro_tiny.png")]
    assert invert.call_count == 0 and _pixels(out / "astro_tiny.png").shape == (64, 64, 3)


def test_the_python_api(crops, essence_files, tmp_path):
    run = essencekit.transfers.transfer(crops, essence_files["tiny"], [0, 2], align=False, encoder=E4E, device="cpu")
    assert run.total == 3
    results = list(run)
    assert [(Path(r.source).name, r.strength, r.status) for r in results] == [
        (f"c{i}.png", s, "done") for i in (1, 2, 3) for s in (0.0, 2.0)]
    assert results[0].image.size == (96, 96) and results[-1].last
    # strength 0 in difference mode: the input back exactly
    assert np.array_equal(np.asarray(results[0].image), _pixels(crops / "c1.png"))
    inverted = list(essencekit.transfers.invert(crops / "c2.png", align=False, encoder=E4E, device="cpu"))
    assert inverted[0].w_plus.shape == (10, 64) and inverted[0].status == "done"
    with pytest.raises(ValueError, match="faces"):
        essencekit.transfers.transfer(crops, essence_files["tiny"], faces="every", encoder=E4E, device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EssencekitError, match="no photos or W\\+ latent files"):
        essencekit.transfers.transfer(tmp_path / "empty", essence_files["tiny"], encoder=E4E, device="cpu")


def test_memory_stays_flat_by_streaming(models, essence_files, tmp_path, monkeypatch):
    """However many inputs, only a batch of them is held between reading and writing."""
    from essencekit.transfers import pipeline

    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(16):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    live = []
    peak = [0]
    prepare, finalize = pipeline.Pipeline.prepare, pipeline.Pipeline.finalize

    def counted_prepare(self, item):
        live.append(item)
        peak[0] = max(peak[0], len(live))
        return prepare(self, item)

    def counted_finalize(self, item):
        live.remove(item)
        return finalize(self, item)

    monkeypatch.setattr(pipeline.Pipeline, "prepare", counted_prepare)
    monkeypatch.setattr(pipeline.Pipeline, "finalize", counted_finalize)
    run = models.transfer(folder, str(essence_files["tiny"]), "0.5,1", align=False, batch_size=2,
                          output=tmp_path / "out")
    seen = 0
    for result in run:
        seen += 1
        assert result.status == "written"
    assert seen == 32 and not live
    assert peak[0] <= 2 + 1  # one batch of faces, plus the item that completes it


def test_background_readers_and_writers_give_the_same_results_in_order(models, crops, essence_files):
    """The GPU default (threads that read ahead and write behind) on the CPU: same images, same order."""
    def images(workers):
        run = models.transfer(crops, str(essence_files["tiny"]), "0.5,1", align=False, batch_size=2, workers=workers)
        return [(Path(r.source).name, r.strength, np.asarray(r.image)) for r in run]

    inline, threaded = images(0), images(2)
    assert [r[:2] for r in threaded] == [r[:2] for r in inline]
    assert all(np.array_equal(a[2], b[2]) for a, b in zip(inline, threaded))


def test_each_photo_header_is_opened_once(models, crops, mocker):
    """One Image.open per photo, whether the photo is decoded or only its size checked for a
    cached result: the cache is asked first, so the header is never parsed twice."""
    from PIL import Image as PILImage

    from essencekit.models.e4e import E4E as E4EModel

    opened = mocker.spy(PILImage, "open")
    uncached = list(models.invert(crops, align=False, cache=False))
    assert [r.status for r in uncached] == ["done"] * 3 and opened.call_count == 3
    list(models.invert(crops, align=False))  # fills the cache
    opened.reset_mock()
    invert = mocker.spy(E4EModel, "invert")
    cached = list(models.invert(crops, align=False))
    assert [r.status for r in cached] == ["done"] * 3 and opened.call_count == 3
    assert invert.call_count == 0  # the cache answered: only the headers were read, for the limit


def test_the_automatic_batch_size_is_measured_once_and_used(models, crops, essence_files, monkeypatch, mocker):
    """The automatic size depends on free device memory: asked twice, it could differ, so the
    run reports the size it really uses."""
    from essencekit.transfers import pipeline

    sizes = iter([2, 3])
    monkeypatch.setattr(pipeline, "auto_batch_size", lambda generator, backend: next(sizes))
    compute = mocker.spy(pipeline.Pipeline, "compute")
    run = models.transfer(crops, str(essence_files["tiny"]), 0, align=False, cache=False)
    assert run.batch_size == 2
    assert [r.status for r in run] == ["done"] * 3
    assert {call.args[2] for call in compute.call_args_list} == {2}
    assert next(sizes) == 3  # not asked a second time


def test_hints_name_flags_on_the_command_line_and_parameters_in_python(crops, essence_files, tmp_path, capsys, cli):
    from essencekit.errors import EssencekitError, OptionError
    from essencekit.transfers import Transferrer

    out = tmp_path / "out"
    base = ["transfer", "--no-align", "-e", essence_files["tiny"], "--encoder", E4E, "--backend", "cpu"]
    # a per-input failure: over the pixel limit, the hint names the flag (and the limit exactly)
    code, stdout, stderr = cli([*base, crops / "c1.png", "-o", out, "--max-pixels", 100, "--json"])
    [line] = _lines(stdout)
    assert code == 1 and "96x96 is 9216 pixels, over the limit of 100 pixels" in line["reason"]
    assert line["reason"].endswith("raise --max-pixels") and "raise --max-pixels" in stderr
    # outputs already there, before any work
    assert cli([*base, crops / "c1.png", "-o", out])[0] == 0
    code, _, stderr = cli([*base, crops / "c1.png", "-o", out])
    assert code == 1 and "use --overwrite to replace them or --skip-existing to keep them" in stderr
    code, _, stderr = cli([*base, crops / "c1.png", "-o", out, "--overwrite", "--skip-existing"])
    assert code == 2 and "--overwrite and --skip-existing exclude each other" in stderr
    # an output that would replace its input
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "c1_tiny.png").write_bytes((crops / "c1.png").read_bytes())
    (tmp_path / "in" / "c1.png").write_bytes((crops / "c1.png").read_bytes())
    code, _, stderr = cli([*base, tmp_path / "in" / "c1.png", tmp_path / "in" / "c1_tiny.png", "-o", tmp_path / "in",
                           "--overwrite"])
    assert code == 1 and "whatever --overwrite says" in stderr
    # sources only in sub-folders
    (tmp_path / "deep" / "sub").mkdir(parents=True)
    (tmp_path / "deep" / "sub" / "c1.png").write_bytes((crops / "c1.png").read_bytes())
    code, _, stderr = cli([*base, tmp_path / "deep", "-o", out])
    assert code == 1 and "use --recursive to look into 1 sub-folder(s)" in stderr

    models = Transferrer(encoder=E4E, device="cpu")
    with pytest.raises(OptionError, match="^overwrite and skip_existing exclude each other$"):
        models.transfer(crops / "c1.png", str(essence_files["tiny"]), output=out, overwrite=True, skip_existing=True)
    with pytest.raises(EssencekitError, match="use overwrite to replace them or skip_existing to keep them"):
        models.transfer(crops / "c1.png", str(essence_files["tiny"]), output=out, align=False)
    with pytest.raises(EssencekitError, match=r"use recursive to look into 1 sub-folder\(s\)\)$"):
        models.transfer(tmp_path / "deep", str(essence_files["tiny"]), output=out, align=False)
    [result] = models.transfer(crops / "c2.png", str(essence_files["tiny"]), align=False, max_pixels=100)
    assert result.reason.endswith("raise max_pixels") and "--" not in result.reason


def test_a_negative_pixel_limit_is_refused(crops, essence_files, capsys, cli):
    code, _, err = cli(["transfer", crops / "c1.png", "--no-align", "-e", essence_files["tiny"], "--encoder", E4E,
                        "--backend", "cpu", "--max-pixels", "-1"])
    assert code == 2 and "Invalid value for '--max-pixels'" in err and "got -1" in err
