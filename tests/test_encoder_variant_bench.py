"""The encoder variant's benchmark (benchmarks/encoder_variant.py) and the GPU check script
(benchmarks/gpu_check.py), at toy sizes on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import encoder_variant
import gpu_check
import pytest
import torch

from essencekit.bench import measure
from essencekit.extraction.settings import DEFAULTS as RECIPE

ROOT = Path(__file__).resolve().parent.parent
TOY = ["--backend", "cpu", "--size", "16", "--max-channels", "8", "--sources", "2", "--optimise-sources", "1",
       "--repeats", "1"]


def test_the_benchmark_measures_the_step_its_parts_and_both_extractions(tiny_clip_plugin, tmp_path, capsys):
    out = tmp_path / "variant.json"
    everything = ",".join(encoder_variant.MEASUREMENTS)
    code = encoder_variant.main([*TOY, "--clip", tiny_clip_plugin.name, "--json", str(out), "--only", everything],
                                runner=measure.in_process(encoder_variant.run_case))
    assert code == 0
    report = json.loads(out.read_text())
    rows = {r["name"]: r for r in report["results"]}
    assert list(rows) == list(encoder_variant.MEASUREMENTS) and not any(r.get("error") for r in rows.values())
    step, parts, extract, optimise = (rows[n] for n in encoder_variant.MEASUREMENTS)
    # the real training step: a warm-up and a timed step, the first changing the encoder
    assert len(step["times_s"]) == 1 and len(step["losses"]) == 2 and len(set(step["losses"])) == 2
    assert step["optimizer"] == "ranger" and step["batch"] == 1 and step["sources"] == 2
    assert set(parts["parts"]) == {"step", "e4e", "generator", "clip", "optimizer"}
    assert all(len(part["times_s"]) == 1 for part in parts["parts"].values())
    assert parts["chunk"] == step["chunk"]

    summary = report["summary"]
    figures = summary["parts_s"]
    assert summary["parts_sum_s"] == pytest.approx(figures["e4e"] + figures["generator"] + figures["clip"])
    # the ratio of the goal: the step timed in turns with its parts, in the same process
    assert summary["step_in_turns_s"] == parts["parts"]["step"]["median_s"]
    assert summary["step_over_parts"] == pytest.approx(summary["step_in_turns_s"] / summary["parts_sum_s"])
    times = {name: part["times_s"] for name, part in parts["parts"].items()}
    assert summary["step_over_parts_rounds"] == [
        pytest.approx(times["step"][0] / (times["e4e"][0] + times["generator"][0] + times["clip"][0]))]
    assert summary["step_s"] == step["median_s"] and summary["step_peak_bytes"] == step["peak_bytes"]
    # (RSS now and the kernel's recorded peak are counted apart: only the peaks compare)
    assert parts["peak_bytes"] >= parts["step_peak_bytes"] > 0 and parts["models_bytes"] > 0
    assert summary["step_goal_met"] == (summary["step_over_parts"] <= 1.5) and summary["same_chunks"]
    assert summary["encoder_extract_s"] == extract["median_s"]  # one target per call
    assert "extract_goal_met" not in summary  # toy widths: not judged against a CPU's goal
    # the default recipe is estimated from the measured per-image step, not run
    per_image = optimise["median_step_s"] / 1
    renders = RECIPE.steps * RECIPE.num_sources * RECIPE.restarts + RECIPE.num_sources + RECIPE.held_out * 5
    assert summary["optimise_default_estimate_s"] == pytest.approx(renders * per_image)
    assert summary["estimated_speedup"] == pytest.approx(summary["optimise_default_estimate_s"] / extract["median_s"])
    assert report["machine"]["torch_threads"] == torch.get_num_threads() and "lscpu_model" in report["machine"]

    text = capsys.readouterr().out
    assert "Goal, no waste: training step" in text and "ESTIMATED for the default recipe" in text
    assert "lscpu:" in text and "not comparable with the goals" in text


def test_the_benchmark_rejects_unknown_measurements(capsys):
    assert encoder_variant.main([*TOY, "--only", "train-step,nope"]) == 2
    assert "unknown measurement(s) nope" in capsys.readouterr().err


# --------------------------------------------------------------------------- the GPU check


def test_the_gpu_check_runs_every_check_on_the_cpu(tmp_path):
    """The command as it is run on a GPU machine, in its CPU mode: every check has its entry."""
    out = tmp_path / "check.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--allow-cpu", "--out", str(out),
         "--bench-only", "generator-forward", "--variant-only", "encoder-extract"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    checks = report["checks"]
    assert list(checks) == list(gpu_check.CHECKS) and report["passed"] and report["complete"]
    assert report["settings"]["backend"] == "cpu" and report["machine"]["backend"] == "cpu"

    goldens = checks["goldens"]
    assert goldens["status"] == "pass" and set(goldens["modes"]) == {"fp32", "backend"}
    tensors = goldens["modes"]["fp32"]["tensors"]
    assert {"generator.grad.w_plus", "e4e.codes", "trace.final_direction", "encoder_loss.grad",
            "arcface.x256"} <= set(tensors)
    # the CPU reproduces every fixture (what the test suite checks) and itself exactly
    assert all(row["cpu_vs_golden"] < 1e-4 for row in tensors.values() if "cpu_vs_golden" in row)
    assert all(row["device_vs_cpu"] == 0 for row in tensors.values())

    assert checks["autocast-parity"]["status"] == "pass"
    training = checks["encoder-training"]
    assert training["status"] == "pass" and training["loss_after"] < training["loss_before"]
    assert training["steps"] == len(training["step_seconds"]) == gpu_check.TRAIN_STEPS
    assert checks["torchrun-2gpu"]["status"] == "skipped" and "needs 2 GPUs" in checks["torchrun-2gpu"]["note"]
    bench = checks["bench"]
    assert bench["status"] == "pass" and [r["name"] for r in bench["results"]] == ["generator-forward"]
    variant = checks["encoder-variant"]
    assert variant["status"] == "pass" and variant["summary"]["encoder_extract_s"] > 0
    assert "all checks passed" in done.stderr


def test_a_failing_check_is_recorded_and_the_others_run(tmp_path, monkeypatch):
    def broken(backend, options):
        raise RuntimeError("autocast exploded")

    monkeypatch.setattr(gpu_check, "check_autocast", broken)
    out = tmp_path / "check.json"
    assert gpu_check.main(["--allow-cpu", "--out", str(out), "--only", "autocast-parity,torchrun-2gpu"]) == 1
    checks = json.loads(out.read_text())["checks"]
    assert checks["autocast-parity"]["status"] == "error"
    assert checks["autocast-parity"]["error"] == "RuntimeError: autocast exploded"
    assert checks["torchrun-2gpu"]["status"] == "skipped"
    assert checks["goldens"] == {"status": "skipped", "note": "not chosen (--only)"}


def test_no_check_starts_after_the_budget(tmp_path):
    out = tmp_path / "check.json"
    assert gpu_check.main(["--allow-cpu", "--out", str(out), "--budget", "0"]) == 1  # nothing answered
    report = json.loads(out.read_text())
    assert report["passed"] and not report["complete"]
    assert all(c["status"] == "skipped" and c["note"].startswith("time budget") for c in report["checks"].values())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer of a machine without CUDA")
def test_without_a_gpu_it_says_so(tmp_path, capsys):
    out = tmp_path / "check.json"
    assert gpu_check.main(["--out", str(out)]) == 2
    assert "--allow-cpu" in capsys.readouterr().err
    assert json.loads(out.read_text())["passed"] is False
