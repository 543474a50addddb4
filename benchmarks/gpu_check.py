#!/usr/bin/env python
"""Every check of essencekit that needs a GPU, in one command of under 10 minutes, into one
JSON file: so that the day a GPU is lent, one run answers everything.

    python benchmarks/gpu_check.py [--out gpu-check.json] [--backend cuda] [--budget 510]
    python benchmarks/gpu_check.py --allow-cpu --out check.json     # the same checks, tiny, on a CPU

Checks, in this order (each one's failure is recorded and the others still run):

* ``goldens``: the tiny golden fixtures (tests/fixtures: tiny-golden.pt's generator, e4e and
  loss keys, tiny-trace-golden.pt, tiny-encoder-loss-golden.pt, tiny-arcface-golden.pt)
  computed by the backend and by the CPU backend; the largest differences, relative to each
  tensor's scale, against stated tolerances. Twice: in strict fp32 (TF32 off: the fixtures'
  1e-4, 1e-3 for gradients, which pass ReLU kinks) and as the backend runs (TF32 matmuls and
  convolutions: 1e-2);
* ``autocast-parity``: the random full-size generator and e4e in the backend's autocast dtype
  against fp32 on the same device: relative L2 error of the codes and images;
* ``encoder-training``: a few ``train_encoder`` steps on the tiny fixtures (a stand-in CLIP, no
  alignment): the loss on the training batch before and after, seconds per step;
* ``torchrun-2gpu``: two processes under torchrun (nccl) against one process with the doubled
  batch, as the test suite does with gloo; skipped with a note unless 2 GPUs are visible;
* ``bench``: ``essencekit bench --backend B --json`` (its own time limit);
* ``encoder-variant``: ``benchmarks/encoder_variant.py --backend B --json`` (its own limit).

No new check starts after ``--budget`` seconds (default 510, 8.5 minutes); the subprocess
checks are given at most what is left of 590 s. The JSON is rewritten after every check, so an
interrupted run still leaves what it measured. ``--allow-cpu`` runs everything on the CPU at
toy sizes, to test this script where there is no GPU. Exit status 0 when every check that ran
passed and the budget left none unstarted, 1 otherwise, 2 when the backend is not available.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
FIXTURES = ROOT / "tests" / "fixtures"
if not (ROOT / "essencekit").is_dir():  # pragma: no cover - the script lives in a checkout
    raise SystemExit("run this from an essencekit source checkout")
sys.path.insert(0, str(ROOT))  # a checkout that is not installed

CHECKS = ("goldens", "autocast-parity", "encoder-training", "torchrun-2gpu", "bench", "encoder-variant")
DEFAULT_BUDGET_S = 510
HARD_LIMIT_S = 590
#: max |device - cpu| / max(|cpu|, 1) allowed, per kind of tensor and precision.
TOLERANCES = {
    "fp32": {"value": 1e-4, "gradient": 1e-3},
    "backend": {"value": 1e-2, "gradient": 1e-2},
}
#: Relative L2 error of autocast against fp32 accepted (bf16 keeps 8 bits of mantissa: about
#: 4e-3 per rounding; a judgement for whole networks, not a specification).
AUTOCAST_TOLERANCE = 5e-2
TRAIN_STEPS = 4
BENCH_LIMIT_S = 240
VARIANT_LIMIT_S = 240


# --------------------------------------------------------------------------------------------
# Comparing tensors


def scaled_difference(actual, expected) -> float:
    """max |actual - expected| / max(max |expected|, 1), in float64 on the CPU."""
    import torch

    actual = torch.as_tensor(actual).detach().double().cpu()
    expected = torch.as_tensor(expected).detach().double().cpu()
    if actual.shape != expected.shape:
        raise ValueError(f"shapes differ: {tuple(actual.shape)} against {tuple(expected.shape)}")
    scale = max(float(expected.abs().max()) if expected.numel() else 0.0, 1.0)
    return float((actual - expected).abs().max()) / scale if actual.numel() else 0.0


def relative_l2(actual, expected) -> float:
    import torch

    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    return float(torch.linalg.vector_norm(actual - expected) / torch.linalg.vector_norm(expected).clamp_min(1e-30))


@contextlib.contextmanager
def strict_fp32(enabled: bool):
    """TF32 off for CUDA matmuls and convolutions inside (the backend turns it on)."""
    import torch

    if not enabled:
        yield
        return
    saved = (torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32)
    torch.set_float32_matmul_precision("highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[1], saved[2]


# --------------------------------------------------------------------------------------------
# The goldens, computed on one backend


class StandInClip:
    """The goldens' fixed stand-in CLIP (tests/fixtures/README.md): the reference's resize to
    224, a strided convolution, ReLU, a mean over pixels and a linear map."""

    def __init__(self, kernel, weight):
        self.kernel, self.weight = kernel, weight

    def __call__(self, images):
        import torch.nn.functional as F

        from essencekit.clip import clip_resize

        features = F.conv2d(clip_resize(images), self.kernel.to(images), stride=8)
        return F.relu(features).mean((2, 3)) @ self.weight.to(images).T


def _load(name: str) -> dict:
    import torch

    return torch.load(FIXTURES / name, weights_only=True)


def golden_outputs(backend, strict: bool) -> dict[str, tuple[str, object, str | None]]:
    """name -> (kind, tensor on the CPU, golden key or None) of every golden computation on
    ``backend`` (``kind``: "value" or "gradient"), in strict fp32 or as the backend computes."""
    from essencekit.models.arcface import load_identity_checkpoint
    from essencekit.models.e4e import load_encoder_checkpoint
    from essencekit.models.stylegan2 import load_generator_checkpoint

    device = backend.device
    out: dict[str, tuple[str, object, str | None]] = {}
    # the models first: preparing them sets the backend's precision, which strict mode overrides
    generator = backend.prepare(load_generator_checkpoint(FIXTURES / "tiny-stylegan2.pt").eval())
    e4e = backend.prepare(load_encoder_checkpoint(FIXTURES / "tiny-e4e.pt").eval())
    arcface = backend.prepare(load_identity_checkpoint(FIXTURES / "tiny-arcface.pth").eval())
    with strict_fp32(strict):
        _golden_computations(device, generator, e4e, arcface, out)
    return out


def _golden_computations(device, generator, e4e, arcface, out: dict) -> None:
    import torch

    from essencekit.clip_losses import consistency_loss, transfer_loss
    from essencekit.extraction.optimise import OptimiseSettings, optimise
    from essencekit.training.loss import EssenceLoss

    def put(name, kind, tensor, key=None):
        out[name] = (kind, torch.as_tensor(tensor).detach().float().cpu(), key)

    golden = _load("tiny-golden.pt")
    with torch.no_grad():
        put("generator.mapping", "value", generator.mapping(golden["g.z"].to(device)), "g.w_from_z")
        put("generator.w_plus.image", "value", generator.synthesis(golden["g.w_plus"].to(device), noise="const"),
            "g.w_plus.image")
        w = generator.mapping(golden["g.z"].to(device), truncation=0.7)
        put("generator.truncated.image", "value", generator.synthesis(w, noise="const"), "g.z_trunc0.7.image")
    w_plus = golden["g.w_plus"].to(device).requires_grad_(True)
    image = generator.synthesis(w_plus, noise="const")
    (image * golden["g.grad.R"].to(device)).sum().backward()
    put("generator.grad.w_plus", "gradient", w_plus.grad, "g.grad.w_plus")

    with torch.no_grad():
        codes = e4e.invert(golden["e4e.x"].to(device))
        put("e4e.codes", "value", codes, "e4e.codes")
        put("e4e.image", "value", e4e.generator.synthesis(codes, noise="const"), "e4e.image")

    source, edited, target = (golden[k].to(device) for k in ("loss.src_emb", "loss.amp_emb", "loss.target_emb"))
    put("loss.transfer", "value", transfer_loss(edited, target), "loss.transfer")
    put("loss.consistency_raw", "value", consistency_loss(edited, source, "raw"), "loss.consistency_coach_py")
    put("loss.consistency_normalized", "value", consistency_loss(edited, source, "normalized"),
        "loss.consistency_optimization_py")

    trace = _load("tiny-trace-golden.pt")
    result = optimise(
        generator, StandInClip(trace["trace.K"], trace["trace.W"]), trace["trace.sources"].to(device),
        trace["trace.target_emb"].to(device), trace["trace.init"].to(device),
        OptimiseSettings(steps=int(trace["trace.steps"])),
    )
    put("trace.losses", "value", result.history["loss"][:, 0], "trace.losses")
    put("trace.final_direction", "value", result.final_direction, "trace.final_direction")
    put("trace.best_direction", "value", result.best_direction, "trace.best_direction")

    encoder_golden = _load("tiny-encoder-loss-golden.pt")
    clip = StandInClip(encoder_golden["enc.K"], encoder_golden["enc.W"])
    loss = EssenceLoss(generator, clip, encoder_golden["enc.sources"], lambda_consistency=0.5, lambda_norm=3e-3)
    directions = encoder_golden["enc.essence"].to(device).requires_grad_(True)
    terms = loss.backward(directions, loss.target_embeddings(encoder_golden["enc.x"].to(device)))
    put("encoder_loss.loss", "value", [terms.loss], None)
    put("encoder_loss.similarity", "value", [terms.similarity], None)
    put("encoder_loss.consistency", "value", [terms.consistency], None)
    put("encoder_loss.norm", "value", [terms.norm], None)
    put("encoder_loss.grad", "gradient", directions.grad, "enc.grad_essence")

    arcface_golden = _load("tiny-arcface-golden.pt")
    with torch.no_grad():
        put("arcface.x112", "value", arcface(arcface_golden["arcface.x112"].to(device)), "arcface.feats112")
        put("arcface.x256", "value", arcface.embed(arcface_golden["arcface.x256"].to(device)), "arcface.feats256")


def check_goldens(backend, options) -> dict:
    from essencekit.backends import select_backend

    goldens = {**_load("tiny-golden.pt"), **_load("tiny-trace-golden.pt"), **_load("tiny-encoder-loss-golden.pt"),
               **_load("tiny-arcface-golden.pt")}
    scalar_goldens = {"encoder_loss.loss": "enc.loss", "encoder_loss.similarity": "enc.similarity",
                      "encoder_loss.consistency": "enc.consistency", "encoder_loss.norm": "enc.l2_per_target"}
    cpu = select_backend("cpu")
    reference = golden_outputs(cpu, strict=True)
    modes = {}
    for mode, strict in (("fp32", True), ("backend", False)):
        # checking the CPU backend itself (--allow-cpu), both modes are the reference's computation
        computed = reference if backend.name == cpu.name else golden_outputs(backend, strict)
        rows, passed = {}, True
        for name, (kind, on_cpu, key) in reference.items():
            tolerance = TOLERANCES[mode][kind]
            difference = scaled_difference(computed[name][1], on_cpu)
            row = {"kind": kind, "device_vs_cpu": difference, "tolerance": tolerance, "pass": difference <= tolerance}
            key = key or scalar_goldens.get(name)
            if key is not None:
                expected = goldens[key].reshape(on_cpu.shape)
                row["cpu_vs_golden"] = scaled_difference(on_cpu, expected)
                row["device_vs_golden"] = scaled_difference(computed[name][1], expected)
            rows[name] = row
            passed &= row["pass"]
        modes[mode] = {"pass": passed, "tensors": rows,
                       "worst": max(rows, key=lambda n: rows[n]["device_vs_cpu"] / rows[n]["tolerance"])}
    return {"pass": all(m["pass"] for m in modes.values()), "modes": modes,
            "measure": "max |device - cpu| / max(max |cpu|, 1) per tensor; cpu_vs_golden is the CPU against the "
                       "fixture (the tests' check)"}


# --------------------------------------------------------------------------------------------
# Autocast


def check_autocast(backend, options) -> dict:
    import torch

    from essencekit.bench import workloads

    spec = {"size": options.size, "max_channels": options.max_channels, "seed": 0}
    e4e, _ = workloads.transfer_models(spec, backend)
    stream = torch.Generator().manual_seed(11)
    photos = (torch.rand(2, 3, e4e.input_size, e4e.input_size, generator=stream) * 2 - 1).to(backend.device)
    with torch.no_grad():
        codes = e4e.invert(photos)
        with backend.autocast():
            codes_autocast = e4e.invert(photos)
        images = e4e.generator.synthesis(codes, noise="const")
        with backend.autocast():
            images_autocast = e4e.generator.synthesis(codes, noise="const")
    errors = {"e4e.codes": relative_l2(codes_autocast, codes), "generator.images": relative_l2(images_autocast, images)}
    return {"pass": all(e <= AUTOCAST_TOLERANCE for e in errors.values()), "autocast_dtype": str(backend.autocast_dtype),
            "size": options.size, "relative_l2": errors, "tolerance": AUTOCAST_TOLERANCE,
            "max_scaled_difference": {"e4e.codes": scaled_difference(codes_autocast, codes),
                                      "generator.images": scaled_difference(images_autocast, images)},
            "note": "random full-size weights" if options.max_channels is None else "capped widths"}


# --------------------------------------------------------------------------------------------
# Encoder training


def _training_photos(folder: Path, count: int, seed: int = 0) -> Path:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        # smooth colour fields: what the stand-in CLIP sees changes with the encoder's output
        base = rng.uniform(0, 255, (4, 4, 3)).astype(np.uint8)
        Image.fromarray(base).resize((64, 72), Image.Resampling.BICUBIC).save(folder / f"p{i}.png")
    return folder


def _stand_in_and_sources():
    golden = _load("tiny-encoder-loss-golden.pt")
    # two sources: the fewest the consistency loss compares, each a generator pass per step
    return StandInClip(golden["enc.K"], golden["enc.W"]), golden["enc.sources"][:2]


def check_training(backend, options) -> dict:
    import torch

    from essencekit.models.e4e import load_encoder_checkpoint
    from essencekit.training.api import train_encoder
    from essencekit.training.data import load_training_images
    from essencekit.training.loss import EssenceLoss

    clip, sources = _stand_in_and_sources()
    # a batch of 2 exercises the per-target terms; on a CPU (a test of this script) 1 is enough
    count = 1 if options.allow_cpu else 2
    with tempfile.TemporaryDirectory(prefix="essencekit-gpu-check-train-") as folder:
        folder = Path(folder)
        _training_photos(folder / "train", count)
        started = time.perf_counter()
        result = train_encoder(folder / "train", folder / "run", encoder=FIXTURES / "tiny-e4e.pt", clip=clip,
                               sources=sources, align=False, device=backend.name, steps=TRAIN_STEPS, batch_size=count,
                               flip=False, optimizer="adamw", lr=1e-3, checkpoint_every=1000, samples=0)
        wall = time.perf_counter() - started
        log = [json.loads(line) for line in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
        trained = torch.load(result.last, weights_only=True)["state_dict"]
        images = load_training_images(folder / "train", align=False)
        batch = images.batch(list(range(count))).to(backend.device)
        e4e = backend.prepare(load_encoder_checkpoint(FIXTURES / "tiny-e4e.pt").eval())
        loss = EssenceLoss(e4e.generator, clip, sources)
        targets = loss.target_embeddings(batch)
        with torch.no_grad():
            before = loss.evaluate(e4e.encoder(batch), targets).loss
            e4e.encoder.load_state_dict({k[len("encoder."):]: v for k, v in trained.items()})
            after = loss.evaluate(e4e.encoder(batch), targets).loss
    seconds = [row["seconds"] for row in log if row.get("kind") == "train"]
    return {"pass": after < before and result.steps_done == TRAIN_STEPS, "steps": result.steps_done,
            "loss_before": before, "loss_after": after, "train_losses": [row["loss"] for row in log],
            "step_seconds": seconds, "median_step_s": statistics.median(seconds) if seconds else None,
            "wall_s": wall, "settings": f"tiny e4e, stand-in CLIP, 2 sources, batch {count}, AdamW lr 1e-3, no flips"}


# --------------------------------------------------------------------------------------------
# torchrun with two GPUs


def distributed_worker(name: str, batch: int, root: str, device: str) -> int:
    """One run of the torchrun comparison (``--distributed-worker``): 2 steps into ``root/name``."""
    from essencekit.training.api import train_encoder

    clip, sources = _stand_in_and_sources()
    root_path = Path(root)
    train_encoder(root_path / "train", root_path / name, encoder=FIXTURES / "tiny-e4e.pt", clip=clip, sources=sources,
                  align=False, device=device, lr=1e-3, steps=2, batch_size=batch, checkpoint_every=1000, samples=0)
    return 0


def check_torchrun(backend, options, limit: float) -> dict:
    import torch

    count = torch.cuda.device_count() if backend.device.type == "cuda" else 0
    if count < 2:
        return {"status": "skipped", "note": f"needs 2 GPUs, {count} visible: run on a 2-GPU machine to check nccl"}
    with tempfile.TemporaryDirectory(prefix="essencekit-gpu-check-ddp-") as folder:
        root = Path(folder)
        _training_photos(root / "train", 2)
        me = [str(Path(__file__).resolve()), "--distributed-worker"]
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
        for name, command in (("two", [*launcher, *me, "two", "1", folder, backend.name]),
                              ("one", [sys.executable, *me, "one", "2", folder, backend.name])):
            done = subprocess.run(command, capture_output=True, text=True, timeout=limit / 2, env=_child_env())
            if done.returncode:
                return {"pass": False, "error": f"{name}: exit {done.returncode}: {done.stderr[-2000:]}"}
        two, one = (torch.load(root / n / "last.pt", weights_only=True)["state_dict"] for n in ("two", "one"))
        start = {k: v for k, v in torch.load(FIXTURES / "tiny-e4e.pt", weights_only=True)["state_dict"].items()
                 if k.startswith("encoder.")}
    moved = max(float((one[k].double() - start[k].double()).abs().max()) for k in one)
    apart = max(float((two[k].double() - one[k].double()).abs().max()) for k in one)
    # 1e-2, not the CPU test's 1e-3: TF32 kernels round batches of 1 and 2 differently
    return {"pass": moved > 1e-4 and apart < 1e-2 * moved, "moved": moved, "two_vs_one": apart,
            "tolerance": "two_vs_one < 1e-2 x moved", "process_group_backend": backend.process_group_backend}


# --------------------------------------------------------------------------------------------
# The benchmarks, as subprocesses


def _child_env() -> dict[str, str]:
    paths = [str(ROOT), str(BENCHMARKS), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def _run_json(command: list[str], path: Path, limit: float) -> tuple[dict | None, dict]:
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit, env=_child_env(), cwd=ROOT)
    except subprocess.TimeoutExpired:
        return None, {"pass": False, "error": f"timed out after {limit:.0f} s", "command": command}
    info = {"command": command, "exit_status": done.returncode, "wall_s": time.perf_counter() - started}
    if done.returncode not in (0, 1) or not path.is_file():  # 1: it ran, and a case failed
        info["error"] = f"exit {done.returncode}: {done.stderr[-2000:]}"
        return None, info
    return json.loads(path.read_text()), info


def check_bench(backend, options, limit: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="essencekit-gpu-check-bench-") as folder:
        path = Path(folder) / "bench.json"
        command = [sys.executable, "-m", "essencekit", "bench", "--backend", backend.name, "--json", "-o", str(path),
                   "--timeout", f"{max(30.0, limit - 20):.0f}"]
        if options.max_channels is not None:
            command += ["--size", str(options.size), "--max-channels", str(options.max_channels), "--repeats", "1"]
        if options.bench_only:
            command += ["--only", options.bench_only]
        report, info = _run_json(command, path, limit)
    if report is None:
        return {"pass": False, **info}
    rows = [{k: r.get(k) for k in ("name", "median_s", "throughput", "throughput_unit", "peak_gib", "peak_kind",
                                   "params", "error")} for r in report["results"]]
    return {"pass": info["exit_status"] == 0 and not any(r["error"] for r in rows), **info, "results": rows,
            "report": report}


def check_variant(backend, options, limit: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="essencekit-gpu-check-variant-") as folder:
        path = Path(folder) / "variant.json"
        command = [sys.executable, str(BENCHMARKS / "encoder_variant.py"), "--backend", backend.name, "--json",
                   str(path), "--timeout", f"{max(30.0, limit / 2):.0f}"]
        if options.max_channels is not None:
            command += ["--size", str(options.size), "--max-channels", str(options.max_channels), "--sources", "2",
                        "--optimise-sources", "1", "--repeats", "1"]
        if options.variant_only:
            command += ["--only", options.variant_only]
        report, info = _run_json(command, path, limit)
    if report is None:
        return {"pass": False, **info}
    failures = [r["name"] for r in report["results"] if r.get("error")]
    return {"pass": info["exit_status"] == 0 and not failures, **info, "failed": failures,
            "summary": report["summary"], "report": report}


# --------------------------------------------------------------------------------------------
# The run


def run_checks(options, backend, write: Callable[[dict], None]) -> dict:
    from essencekit.bench import measure

    started = time.perf_counter()
    report = {"benchmark": "gpu-check", "machine": measure.machine_info(backend),
              "settings": {"backend": backend.name, "allow_cpu": options.allow_cpu, "budget_s": options.budget,
                           "size": options.size, "max_channels": options.max_channels},
              "checks": {}}
    checks: dict[str, Callable[[], dict]] = {
        "goldens": lambda: check_goldens(backend, options),
        "autocast-parity": lambda: check_autocast(backend, options),
        "encoder-training": lambda: check_training(backend, options),
        "torchrun-2gpu": lambda: check_torchrun(backend, options, left(240)),
        "bench": lambda: check_bench(backend, options, left(BENCH_LIMIT_S)),
        "encoder-variant": lambda: check_variant(backend, options, left(VARIANT_LIMIT_S)),
    }

    def left(limit: float) -> float:
        return max(1.0, min(limit, HARD_LIMIT_S - (time.perf_counter() - started)))

    for name in CHECKS:
        elapsed = time.perf_counter() - started
        if name not in options.only:
            entry = {"status": "skipped", "note": "not chosen (--only)"}
        elif elapsed > options.budget:
            entry = {"status": "skipped", "note": f"time budget: {elapsed:.0f} s spent of {options.budget:.0f} s"}
        else:
            print(f"[{CHECKS.index(name) + 1}/{len(CHECKS)}] {name} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            try:
                entry = checks[name]()
                entry.setdefault("status", "pass" if entry.get("pass") else "fail")
            except Exception as error:  # one check's failure must not stop the others
                entry = {"status": "error", "pass": False, "error": f"{type(error).__name__}: {error}",
                         "traceback": traceback.format_exc()[-4000:]}
            entry["seconds"] = time.perf_counter() - t0
            print(f"[{CHECKS.index(name) + 1}/{len(CHECKS)}] {name}: {entry['status']} ({entry['seconds']:.0f} s)",
                  file=sys.stderr, flush=True)
        report["checks"][name] = entry
        report["wall_s"] = time.perf_counter() - started
        write(report)
    report["passed"] = all(c["status"] in ("pass", "skipped") for c in report["checks"].values())
    report["complete"] = not any(c.get("note", "").startswith("time budget") for c in report["checks"].values())
    write(report)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchmarks/gpu_check.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-check.json"), help="the JSON to write (%(default)s)")
    parser.add_argument("--backend", default="cuda", help="the backend to check (default %(default)s)")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="run every check on the CPU backend at toy sizes (tests this script without a GPU)")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S,
                        help="start no check after this many seconds (default %(default)s)")
    parser.add_argument("--only", default=",".join(CHECKS), help=f"checks to run (default all: {','.join(CHECKS)})")
    parser.add_argument("--size", type=int, help="generator size of autocast-parity (default 1024; 32 with --allow-cpu)")
    parser.add_argument("--max-channels", type=int, help="cap widths in autocast-parity and the benchmarks")
    parser.add_argument("--bench-only", metavar="CASE,...", help="cases of essencekit bench (default all)")
    parser.add_argument("--variant-only", metavar="NAME,...", help="measurements of encoder_variant.py (default all)")
    parser.add_argument("--distributed-worker", nargs=4, metavar=("NAME", "BATCH", "ROOT", "DEVICE"),
                        help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    if options.distributed_worker:
        name, batch, root, device = options.distributed_worker
        return distributed_worker(name, int(batch), root, device)
    from essencekit.atomic import atomic_path
    from essencekit.backends import select_backend
    from essencekit.errors import EssencekitError

    options.only = [c.strip() for c in options.only.split(",") if c.strip()]
    unknown = [c for c in options.only if c not in CHECKS]
    if unknown:
        print(f"error: unknown check(s) {', '.join(unknown)}; choose from {', '.join(CHECKS)}", file=sys.stderr)
        return 2
    if options.allow_cpu:
        options.backend = "cpu"
        options.size = options.size or 32
        options.max_channels = options.max_channels or 8
    options.size = options.size or 1024

    def write(report: dict) -> None:
        with atomic_path(options.out) as tmp:
            tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")

    try:
        backend = select_backend(options.backend)
    except EssencekitError as error:
        write({"benchmark": "gpu-check", "passed": False, "error": str(error),
               "settings": {"backend": options.backend}, "checks": {}})
        print(f"error: {error} (--allow-cpu runs the checks on the CPU)", file=sys.stderr)
        return 2
    report = run_checks(options, backend, write)
    failed = [name for name, check in report["checks"].items() if check["status"] in ("fail", "error")]
    verdict = f"FAILED: {', '.join(failed)}" if failed else "all checks passed"
    if not report["complete"]:
        verdict += " (the time budget ran out before every check started)"
    print(f"{verdict}; written to {options.out} ({report['wall_s']:.0f} s)", file=sys.stderr)
    return 0 if report["passed"] and report["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
