"""The generator benchmark (benchmarks/compare/generator.py, a development benchmark outside the
package): the reference form's arithmetic and the benchmark's plumbing.

Everything runs at toy sizes; only one test starts a worker process.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from compare import common
from compare import generator as bench
from compare.reference_ops import (
    ReferenceBlur,
    ReferenceUpsample,
    reference_generator,
    upfirdn2d_reference,
    use_reference_ops,
    uses_reference_ops,
    uses_reference_sequence,
)
from rich.console import Console

from essencekit.bench import measure
from essencekit.hugepages import HUGE_PAGES_ENV
from essencekit.models.ops import blur, make_blur_kernel, upsample2x
from essencekit.models.stylegan2 import Generator, GeneratorConfig, load_generator_checkpoint

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "tiny-stylegan2.pt"
SMALL = GeneratorConfig.ffhq(16, max_channels=8)  # 3 resolutions, 8 channels: milliseconds


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape
    return ((actual - expected).abs().max() / expected.abs().max()).item()


# -- the reference form ----------------------------------------------------------------------


def test_upfirdn2d_reference_equals_our_ops():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 9, 7)
    asymmetric = torch.randn(3, 4)
    assert relative_error(upfirdn2d_reference(x, asymmetric, pad=(2, 1)), blur(x, asymmetric, (2, 1))) < 1e-6
    kernel = make_blur_kernel((1, 3, 3, 1), gain=4.0)
    assert relative_error(upfirdn2d_reference(x, kernel, up=2, pad=(2, 1)), upsample2x(x, kernel)) < 1e-6
    full = upfirdn2d_reference(x, kernel, pad=(1, 1))
    assert torch.equal(upfirdn2d_reference(x, kernel, down=2, pad=(1, 1)), full[..., ::2, ::2])
    cropped = upfirdn2d_reference(x, kernel, pad=(-1, 2))
    assert torch.allclose(cropped, blur(x, kernel, (1, 2))[..., 2:, 2:], atol=1e-6)


def test_reference_form_gives_our_images_and_gradients_on_the_tiny_fixture():
    golden = torch.load(FIXTURES / "tiny-golden.pt", weights_only=True)
    ours = load_generator_checkpoint(TINY).set_modulated_conv("grouped")
    reference = use_reference_ops(load_generator_checkpoint(TINY))
    assert uses_reference_ops(reference) and not uses_reference_ops(ours)
    assert uses_reference_sequence(reference) and not uses_reference_sequence(ours)
    assert reference.modulated_conv == "grouped"
    assert any(isinstance(m, ReferenceBlur) for m in reference.modules())
    assert any(isinstance(m, ReferenceUpsample) for m in reference.modules())
    assert sorted(reference.state_dict()) == sorted(ours.state_dict())

    results = []
    for g in (ours, reference):  # the first sample only: samples are independent
        w_plus = golden["g.w_plus"][:1].clone().requires_grad_(True)
        image = g.synthesis(w_plus)
        (image * golden["g.grad.R"][:1]).sum().backward()
        results.append((image.detach(), w_plus.grad))
    (image_ours, grad_ours), (image_ref, grad_ref) = results
    assert relative_error(image_ref, image_ours) < 1e-5
    assert relative_error(grad_ref, grad_ours) < 1e-5
    assert relative_error(image_ref, golden["g.w_plus.image"][:1]) < 1e-4
    assert relative_error(grad_ref, golden["g.grad.w_plus"][:1]) < 1e-4


def test_reference_generator_has_the_same_random_weights():
    torch.manual_seed(3)
    plain = Generator(SMALL)
    torch.manual_seed(3)
    reference = reference_generator(SMALL)
    for (name, a), (_, b) in zip(plain.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name


# -- configuration and planning --------------------------------------------------------------


def test_plan_keeps_batches_ascending_within_a_worker():
    plans = bench.plan_workers([SMALL], bench.DEFAULT_VARIANTS, [4, 1])
    assert [(p["variant"], p["cases"]) for p in plans] == [
        ("reference", [("forward", 1), ("forward", 4)]),
        ("reference", [("fwd+bwd", 1), ("fwd+bwd", 4)]),
        ("grouped", [("forward", 1), ("forward", 4)]),
        ("grouped", [("fwd+bwd", 1), ("fwd+bwd", 4)]),
        ("shared", [("forward", 1), ("forward", 4)]),
        ("shared", [("fwd+bwd", 1), ("fwd+bwd", 4)]),
        ("shared+checkpoint", [("fwd+bwd", 1), ("fwd+bwd", 4)]),
    ]
    single = bench.plan_workers([SMALL], ["shared"], [1])
    assert [p["cases"] for p in single] == [[("forward", 1), ("fwd+bwd", 1)]]


def test_time_repeats_respects_the_budget():
    calls = []

    def fn():
        calls.append(1)
        return len(calls)

    times, last = measure.time_repeats(fn, repeats=3, budget_s=None)
    assert len(times) == 3 and last == 3
    calls.clear()
    # a budget smaller than one call still leaves three samples for the median, then stops
    times, _ = measure.time_repeats(lambda: __import__("time").sleep(0.02), repeats=5, budget_s=0.03)
    assert len(times) == measure.MIN_TIMED_RUNS == 3
    times, _ = measure.time_repeats(lambda: None, repeats=2, budget_s=0.0)
    assert len(times) == 2


def test_describe_exit():
    assert "out of memory" in measure.describe_exit(-9)
    assert measure.describe_exit(3) == "exited with status 3"


# -- the worker ------------------------------------------------------------------------------


def test_measure_cases_in_process(tmp_path):
    spec = {
        "config": bench.asdict(SMALL), "variant": "reference",
        "cases": [["forward", 1], ["fwd+bwd", 1], ["fwd+bwd", 2]],
        "backend": "cpu", "repeats": 2, "time_budget_s": None, "warmup": True,
        "autocast": True, "seed": 0, "save_dir": str(tmp_path),
    }
    result = bench.measure_cases(spec)
    assert result["variant"] == "reference" and result["size"] == 16
    assert [(c["op"], c["batch"]) for c in result["cases"]] == [("forward", 1), ("fwd+bwd", 1), ("fwd+bwd", 2)]
    for case in result["cases"]:
        assert len(case["times_s"]) == 2 and case["median_s"] > 0
        assert case["peak_kind"] == "rss" and case["peak_bytes"] == case["peak_rss_bytes"] > 0
    saved = [c.get("output_path") for c in result["cases"]]
    assert saved[2] is None  # only batch 1 is kept
    forward = torch.load(saved[0], weights_only=True)
    both = torch.load(saved[1], weights_only=True)
    assert forward["image"].shape == (1, 3, 16, 16)
    assert both["grad"].shape == (1, SMALL.n_latent, 512)
    assert torch.allclose(forward["image"], both["image"], atol=1e-6)


def test_worker_process(tmp_path, monkeypatch):
    """The one subprocess: ``python -m compare.generator --worker SPEC``, started from anywhere
    (compare is not installed), with the reference variant's environment (no huge pages) over
    this process's."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.setenv(HUGE_PAGES_ENV, "1")
    (plan,) = bench.plan_workers([SMALL], ["reference"], [1])
    assert plan["env"][HUGE_PAGES_ENV] == "0"
    spec = {
        **plan, "backend": "cpu", "repeats": 1, "time_budget_s": None, "warmup": False,
        "autocast": True, "seed": 0, "save_dir": None,
    }
    result = bench.subprocess_runner(timeout=120)(spec, str(tmp_path))
    assert "error" not in result, result
    assert result["variant"] == "reference" and result["huge_pages"] is False
    assert [(c["op"], c["batch"]) for c in result["cases"]] == [("forward", 1), ("fwd+bwd", 1)]
    assert result["cases"][1]["peak_rss_bytes"] > 50 * 2**20
    assert not list(tmp_path.glob("*.json"))  # spec and result files are cleaned up


def test_variants_set_their_allocator_in_the_worker_environment(tmp_path, monkeypatch):
    seen = []

    def run(command, **kwargs):
        seen.append(kwargs["env"])
        return measure.subprocess.CompletedProcess(command, 3, "", "")

    monkeypatch.setattr(measure.subprocess, "run", run)
    monkeypatch.setenv("ESSENCEKIT_TEST_MARKER", "kept")
    monkeypatch.delenv(HUGE_PAGES_ENV, raising=False)
    runner = bench.subprocess_runner()
    for plan in bench.plan_workers([SMALL], ["reference", "grouped", "grouped+malloc"], [1]):
        runner(plan, str(tmp_path))
    reference, grouped, tuned = seen
    assert all(env["ESSENCEKIT_TEST_MARKER"] == "kept" for env in seen)
    assert reference[HUGE_PAGES_ENV] == "0" and reference[bench.MALLOC_TUNING_ENV] == "0"
    assert HUGE_PAGES_ENV not in grouped and grouped[bench.MALLOC_TUNING_ENV] == "0"
    assert tuned[bench.MALLOC_TUNING_ENV] == "1"


def test_failed_worker_process_is_reported(tmp_path, monkeypatch):
    def killed(command, **kwargs):
        assert command[1:4] == ["-m", bench.MODULE, "--worker"]
        return measure.subprocess.CompletedProcess(command, -9, "", "Traceback ...\nMemoryError\n")

    monkeypatch.setattr(measure.subprocess, "run", killed)
    result = measure.run_worker(bench.MODULE, {"variant": "reference"}, tmp_path)
    assert result["error"] == "worker killed by SIGKILL (likely out of memory): Traceback ...\nMemoryError"


# -- the whole benchmark, in-process ---------------------------------------------------------


@pytest.fixture(scope="module")
def report():
    return bench.benchmark(
        [SMALL], bench.DEFAULT_VARIANTS, [1, 2], backend="cpu", repeats=1,
        runner=bench.in_process_runner,
    )


def test_report_fields(report):
    assert report["machine"]["backend"] == "cpu" and report["machine"]["torch"] == torch.__version__
    assert report["machine"]["cpu"] and report["machine"]["logical_cores"] >= 1
    rows = report["results"]
    assert len(rows) == 3 * 2 * 2 + 2  # 3 variants x 2 ops x 2 batches, checkpoint fwd+bwd only
    for row in rows:
        assert {"size", "variant", "op", "batch", "times_s", "median_s", "images_per_s", "peak_bytes",
                "peak_kind", "speedup_vs_reference", "runs"} <= set(row)
        assert "error" not in row and row["speedup_vs_reference"] > 0
    assert all(r["speedup_vs_reference"] == 1 for r in rows if r["variant"] == "reference")
    agreement = {row["variant"]: row for row in report["agreement"]}
    assert set(agreement) == {"grouped", "shared", "shared+checkpoint"}
    for row in agreement.values():
        assert row["identical"] and row["image_rel_diff"] < 1e-5 and row["grad_rel_diff"] < 1e-5
    assert agreement["grouped"]["image_from"] == "forward"
    assert agreement["shared+checkpoint"]["image_from"] == "fwd+bwd"
    rec = report["recommendation"]
    assert rec["faster"] in ("grouped", "shared") and rec["basis"] == "fwd+bwd"
    assert rec["backend_uses"] == "grouped"  # the generator's form where grouped convolutions are fast
    json.dumps(report)


def test_rendering(report):
    console = Console(file=io.StringIO(), width=200)
    bench.render(report, console)
    text = console.file.getvalue()
    assert "CPU:" in text and "torch " in text and "Backend: cpu" in text
    assert "shared+checkpoint" in text and "fwd+bwd" in text and "peak RSS GiB" in text
    assert "same results" in text and "Modulated conv on cpu" in text
    markdown = bench.markdown_table(report)
    assert markdown.count("\n") == 2 + len(report["results"])


def test_recommendation_from_figures():
    def row(variant, op, batch, seconds, peak_gib=1.0):
        return {"size": 1024, "variant": variant, "op": op, "batch": batch, "median_s": seconds,
                "peak_bytes": peak_gib * 2**30, "speedup_vs_reference": 80 / seconds}

    rows = [
        row("reference", "fwd+bwd", 4, 80, 21), row("grouped", "fwd+bwd", 4, 25, 7.5),
        row("shared", "fwd+bwd", 4, 20, 8.5), row("grouped", "forward", 1, 1.0), row("shared", "forward", 1, 2.0),
    ]
    rec = bench.recommend_modulated_conv(rows, "cpu", "shared")
    assert rec["faster"] == "shared" and rec["basis"] == "fwd+bwd" and rec["clear"] and rec["agrees"]
    assert abs(rec["shared_over_grouped"] - 0.8) < 1e-9
    assert rec["pairs"][0]["shared_peak_gib"] == 8.5


def test_command_line(tmp_path, capsys):
    out = tmp_path / "bench.json"
    md = tmp_path / "bench.md"
    argv = ["--backend", "cpu", "--sizes", "16", "--max-channels", "8", "--batches", "1",
            "--variants", "reference,shared", "--repeats", "1", "--json", str(out), "--markdown", str(md)]
    assert bench.main(argv, runner=bench.in_process_runner) == 0
    printed = capsys.readouterr()
    assert "reference" in printed.out and "vs reference" in printed.out
    assert "[2/2]" in printed.err
    data = json.loads(out.read_text())
    assert data["settings"]["sizes"] == [16] and len(data["results"]) == 4
    assert data["agreement"][0]["variant"] == "shared"
    assert md.read_text().startswith("| size |")


def test_command_line_reports_failures(capsys):
    def broken(spec, workdir):
        return {"error": "worker killed by SIGKILL (likely out of memory)"}

    argv = ["--backend", "cpu", "--sizes", "16", "--max-channels", "8", "--batches", "1",
            "--variants", "reference"]
    assert bench.main(argv, runner=broken) == 1
    text = capsys.readouterr().out
    assert "failed" in text and "FAILED 16 px reference forward b1: worker killed by SIGKILL" in text


def test_command_line_rejects_unknown_variants(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--variants", "fastest"])
    assert "choose from" in capsys.readouterr().err


def test_markdown_tables_and_ratios():
    columns = [("name", "left"), ("s", "right"), ("note", "left")]
    assert common.markdown(columns, [["a", "1.00", "x"], ["b", "failed"]]) == (
        "| name | s | note |\n| --- | ---: | --- |\n| a | 1.00 | x |\n| b | failed | |\n"
    )
    assert common.ratio(2.375) == "2.38x" and common.ratio(None) == "-"
