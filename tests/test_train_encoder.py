"""Training the essence encoder (``train-encoder``) on the tiny fixtures: the loss goes down, a
stopped run resumes exactly, two torchrun processes train as one with their batches together,
and the checkpoint feeds ``extract --method encoder`` and ``transfer``."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURES, TINY_CLIP_NAME
from PIL import Image

from essencekit.clip import clip_resize
from essencekit.training.api import train_encoder
from essencekit.training.loss import EssenceLoss
from essencekit.training.trainer import TrainingInterrupted

E4E = FIXTURES / "tiny-e4e.pt"
GOLDEN = FIXTURES / "tiny-encoder-loss-golden.pt"


class StandIn:
    """The golden's fixed stand-in CLIP (a callable on generated images)."""

    def __init__(self):
        golden = torch.load(GOLDEN, weights_only=True)
        self.kernel, self.weight = golden["enc.K"], golden["enc.W"]

    def __call__(self, images):
        return F.relu(F.conv2d(clip_resize(images), self.kernel.to(images), stride=8)).mean((2, 3)) @ self.weight.to(images).T


def _sources():
    # two of the golden's five sources: the fewest the consistency loss compares, and each
    # source costs a generator pass per target and step
    return torch.load(GOLDEN, weights_only=True)["enc.sources"][:2]


def _photos(folder, count, seed=0, shape=(72, 64)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        # smooth colour fields, so that flips and crops change what CLIP sees
        base = rng.uniform(0, 255, (4, 4, 3)).astype(np.uint8)
        Image.fromarray(base).resize(shape[::-1], Image.Resampling.BICUBIC).save(folder / f"p{i}.png")
    return folder


def _train(tmp_path, run="run", **options):
    settings = dict(encoder=E4E, clip=StandIn(), sources=_sources(), align=False, device="cpu", lr=1e-3,
                    checkpoint_every=1000)
    settings.update(options)
    return train_encoder(tmp_path / "train", tmp_path / run, **settings)


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def _max_difference(a, b):
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- training


def test_a_few_steps_reduce_the_training_loss(tmp_path):
    from essencekit.models.e4e import load_encoder_checkpoint
    from essencekit.training.data import load_training_images

    _photos(tmp_path / "train", 2)
    # AdamW: Ranger's first steps are deliberately small (RAdam's warm-up), too small to show
    # in four steps; Ranger's update has its own tests (test_train_loss.py)
    result = _train(tmp_path, steps=4, batch_size=2, flip=False, optimizer="adamw")
    assert result.steps_done == 4 and result.best.is_file() and result.last.is_file()

    e4e = load_encoder_checkpoint(E4E)
    images = load_training_images(tmp_path / "train", align=False)
    loss = EssenceLoss(e4e.generator, StandIn(), _sources())
    batch = images.batch([0, 1])
    targets = loss.target_embeddings(batch)
    with torch.no_grad():
        before = loss.evaluate(e4e.encoder(batch), targets)
        e4e.encoder.load_state_dict({k[8:]: v for k, v in _weights(result.last).items()})
        after = loss.evaluate(e4e.encoder(batch), targets)
    assert after.loss < before.loss - 1e-3, (before, after)
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == list(range(1, 5))
    assert all(row["kind"] == "train" and row["loss"] > 0 for row in log)


def test_ctrl_c_saves_and_resume_continues_exactly(tmp_path):
    _photos(tmp_path / "train", 2)
    _photos(tmp_path / "val", 1, seed=5)
    common = dict(steps=3, val_dir=tmp_path / "val", val_every=2, samples=0)
    whole = _train(tmp_path, run="whole", **common)

    def stop_after_first(report):
        if report.step == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the run

    with pytest.raises(TrainingInterrupted) as stopped:
        _train(tmp_path, run="split", progress=stop_after_first, **common)
    assert stopped.value.steps_done == 1 and stopped.value.last == tmp_path / "split" / "last.pt"
    assert torch.load(stopped.value.last, weights_only=True)["training"]["step"] == 1
    resumed = _train(tmp_path, run="split", resume=True, **common)
    assert resumed.steps_done == 3

    # the same data order, flips and optimiser state (Lookahead's included): the same steps
    assert _max_difference(_weights(whole.last), _weights(resumed.last)) < 1e-6
    logs = [[json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
            for run in ("whole", "split")]
    assert [(r["step"], r["kind"]) for r in logs[0]] == [(r["step"], r["kind"]) for r in logs[1]]
    for a, b in zip(*logs):
        assert abs(a["loss"] - b["loss"]) <= 1e-5 * abs(a["loss"]), (a, b)
    assert whole.best_val_loss == pytest.approx(resumed.best_val_loss, rel=1e-5)


_DISTRIBUTED_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_train_encoder import StandIn, _sources, E4E
from essencekit.training.api import train_encoder
root = Path({root!r})
train_encoder(root / "train", root / sys.argv[1], encoder=E4E, clip=StandIn(), sources=_sources(), align=False,
              device="cpu", lr=1e-3, steps=2, batch_size=int(sys.argv[2]), checkpoint_every=1000)
"""


def test_two_torchrun_processes_train_as_one_with_the_doubled_batch(tmp_path):
    _photos(tmp_path / "train", 2)
    script = tmp_path / "train_script.py"
    script.write_text(_DISTRIBUTED_SCRIPT.format(tests=str(FIXTURES.parent), root=str(tmp_path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
         "two", "1"], capture_output=True, text=True, env=env, timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    single = subprocess.run([sys.executable, str(script), "one", "2"], capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]

    two, one = _weights(tmp_path / "two" / "last.pt"), _weights(tmp_path / "one" / "last.pt")
    start = {k: v for k, v in torch.load(E4E, weights_only=True)["state_dict"].items() if k.startswith("encoder.")}
    moved = _max_difference(start, one)
    assert moved > 1e-4  # training changed the weights...
    assert _max_difference(two, one) < 1e-3 * moved  # ...and both runs changed them the same way
    metadata = torch.load(tmp_path / "two" / "last.pt", weights_only=True)["metadata"]
    assert metadata["world_size"] == "2"
    # rank 0 alone wrote the run's files
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["best.pt", "last.pt", "metrics.jsonl"]


# --------------------------------------------------------------------------- the command line


@pytest.fixture
def tiny_clip(tiny_clip_plugin, tiny_clip_weights):
    return ["--clip", TINY_CLIP_NAME, "--clip-weights", tiny_clip_weights]


def test_train_extract_and_transfer_from_the_command_line(tmp_path, tiny_clip, cli):
    from essencekit import load_encoder, load_essence
    from essencekit.essence_encoder import EssenceEncoder

    train, val = _photos(tmp_path / "train", 2), _photos(tmp_path / "val", 2, seed=3)
    sources = tmp_path / "sources.pt"
    torch.save(_sources(), sources)
    run = tmp_path / "run"
    base = ["train-encoder", train, "--val", val, "--encoder", E4E, "--sources", sources, "--no-align",
            "--backend", "cpu", *tiny_clip]
    code, out, err = cli([*base, "-o", run, "--steps", 2, "--val-every", 2, "--samples", 1, "--json"])
    assert code == 0, err
    summary = json.loads(out)
    assert summary["steps_done"] == 2 and summary["best"] == str(run / "best.pt")
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["val-000002.png"]
    kinds = [json.loads(line)["kind"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert kinds == ["train", "train", "validation"]

    model = load_encoder(run / "best.pt", "cpu")
    assert isinstance(model, EssenceEncoder) and model.metadata["clip_model"] == TINY_CLIP_NAME
    assert model.recommended_strength == 1.0

    # an essence in one forward pass, of several targets at once, from the run folder
    targets = _photos(tmp_path / "targets", 2, seed=9)
    code, out, err = cli(["extract", targets / "p0.png", targets / "p1.png", "--method", "encoder", "--encoder", run,
                          "--no-align", "-o", tmp_path / "essences", "--backend", "cpu", "--json"])
    assert code == 0, err
    written = [row["output"] for row in json.loads(out)["essences"]]
    essence = load_essence(written[0])
    assert essence.metadata["method"].startswith("TargetCLIP encoder variant")
    assert essence.metadata["encoder_sha256"] == _sha(run / "best.pt")
    with torch.no_grad():
        from essencekit.extraction.encoder_method import target_pixels
        from essencekit.images import read_target

        pixels, how = target_pixels(read_target(targets / "p0.png"), 256, align="whole")
        expected = model.directions(pixels)[0]
    assert how == "whole" and torch.allclose(essence.direction, expected, atol=1e-5)

    code, _, err = cli(["transfer", targets, "--no-align", "-e", written[0], "-o", tmp_path / "out", "--encoder", E4E,
                        "--backend", "cpu"])
    assert code == 0, err
    assert len(list((tmp_path / "out").iterdir())) == 2

    # a run is never overwritten, and a resume with other settings is refused
    before = {p.name: _sha(p) for p in run.glob("*.pt")}
    code, _, err = cli([*base, "-o", run, "--steps", 3])
    assert code == 2 and "already holds a training run" in err and "--resume" in err
    code, _, err = cli([*base, "--steps", 3, "--resume", run, "--lr", 0.5])
    assert code == 2 and "trained differently" in err and "lr" in err
    code, _, err = cli([base[0], _photos(tmp_path / "other", 2, seed=7), *base[2:], "--steps", 3, "--resume", run])
    assert code == 2 and "training images differ" in err
    code, _, err = cli([*base, "--steps", 3, "--resume", run, "-o", tmp_path / "elsewhere"])
    assert code == 2 and "--resume" in err
    assert {p.name: _sha(p) for p in run.glob("*.pt")} == before


def test_bad_training_inputs_are_one_line_each(tmp_path, tiny_clip, cli, register_aligner):
    from essencekit.aligners import Aligner

    empty = tmp_path / "empty"
    empty.mkdir()
    base = ["-o", tmp_path / "run", "--encoder", E4E, "--backend", "cpu", *tiny_clip]
    code, _, err = cli(["train-encoder", empty, "--no-align", *base])
    assert code == 2 and str(empty) in err and "Traceback" not in err

    class NoFaces(Aligner):
        name, priority = "test-no-faces", 100

        def availability(self):
            return True, ""

        def detect(self, image):
            return []

    register_aligner(NoFaces())
    faceless = _photos(tmp_path / "faceless", 2)
    code, _, err = cli(["train-encoder", faceless, "--aligner", "test-no-faces", *base])
    assert code == 2 and "no face found" in err and "--no-align" in err

    broken = tmp_path / "broken-val"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"not a png")
    code, _, err = cli(["train-encoder", _photos(tmp_path / "train", 2), "--val", broken, "--no-align", *base])
    assert code == 2 and "--val" in err and str(broken) in err

    target = _photos(tmp_path / "t", 1) / "p0.png"
    for checkpoint, expected in ((FIXTURES / "tiny-stylegan2.pt", "not an essence encoder checkpoint"),
                                 (E4E, "e4e inversion checkpoint, not a trained essence encoder")):
        code, _, err = cli(["extract", target, "--method", "encoder", "--encoder", checkpoint, "--no-align", "-o",
                            tmp_path / "x.pt"])
        assert code == 1 and expected in err and "train-encoder" in err
    code, _, err = cli(["extract", target, "--method", "encoder", "-o", tmp_path / "x.pt"])
    assert code == 2 and "--encoder" in err
    code, _, err = cli(["extract", target, "--method", "encoder", "--encoder", empty, "-o", tmp_path / "x.pt"])
    assert code == 1 and "without best.pt" in err
    # refused runs leave nothing behind, not even an empty run folder
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "run").exists()


def test_resume_needs_a_stopped_run(tmp_path, cli):
    code, _, err = cli(["train-encoder", _photos(tmp_path / "train", 1), "--resume", tmp_path / "none", "--no-align"])
    assert code == 1 and "no last.pt" in err
    code, _, err = cli(["train-encoder", tmp_path / "train", "--no-align"])
    assert code == 2 and "-o RUN_DIR" in err


def test_the_encoder_variant_is_explained_in_the_help(cli):
    code, out, _ = cli(["train-encoder", "--help"])
    assert code == 0 and "torchrun" in out and "--resume" in out
    text = textwrap.dedent(out)
    assert "--batchnorm" in text and "--optimizer" in text


def test_missing_sources_name_the_pull_weights_command(tmp_path, tiny_clip, cli):
    code, _, err = cli(["train-encoder", _photos(tmp_path / "train", 1), "-o", tmp_path / "run", "--no-align",
                        "--encoder", E4E, "--backend", "cpu", *tiny_clip])
    assert code == 1 and "essencekit pull-weights encoder-sources" in err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_sigterm_finishes_the_step_saves_and_exits_143(tmp_path, tiny_clip, cli, monkeypatch):
    from essencekit.training import trainer

    step = trainer.train_step

    def terminated_during_the_first_step(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # a scheduler stops the job mid-step
        return step(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_step", terminated_during_the_first_step)
    sources = tmp_path / "sources.pt"
    torch.save(_sources(), sources)
    code, _, err = cli(["train-encoder", _photos(tmp_path / "train", 1), "-o", tmp_path / "run", "--no-align",
                        "--encoder", E4E, "--sources", sources, "--backend", "cpu", "--steps", 5, *tiny_clip])
    assert code == 143 and "--resume" in err
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert saved["training"]["step"] == 1  # the step under way was finished, not lost
