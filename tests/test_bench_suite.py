"""``essencekit bench`` and the suite behind it, at toy sizes (16 px, widths capped at 8).

The whole suite runs in this process (the tiny CLIP is a plugin registered here); the command
line runs one case in a worker process, as it does for people.
"""

from __future__ import annotations

import io
import json
import statistics

import pytest
import torch
from rich.console import Console

import essencekit
from essencekit.backends import Backend
from essencekit.bench import report as reporting
from essencekit.bench import suite
from essencekit.hugepages import huge_pages_status

TINY = {"size": 16, "max_channels": 8, "repeats": 2, "backend": "cpu", "images": 2}


def test_the_whole_suite_in_process(tiny_clip_plugin, tmp_path):
    lines = []
    report = suite.run_suite(**TINY, clip=tiny_clip_plugin.name, runner=suite.in_process_runner,
                             progress=lines.append)
    assert [r["name"] for r in report["results"]] == list(suite.CASES)
    assert len(lines) == 2 * len(suite.CASES) and lines[0].startswith(f"[1/{len(suite.CASES)}] generator-forward")
    machine = report["machine"]
    assert machine["backend"] == "cpu" and machine["torch"] == torch.__version__ and machine["cpu"]
    assert machine["logical_cores"] >= 1 and machine["memory_total_bytes"] > 0 and "gpus" in machine
    assert machine["huge_pages"] == huge_pages_status()[1]
    assert report["settings"].items() >= {"size": 16, "repeats": 2, "max_channels": 8, "weights": "random"}.items()
    for row in report["results"]:
        assert "error" not in row, row
        assert {"name", "description", "backend", "device", "params", "repeats", "times_s", "median_s", "throughput",
                "throughput_unit", "peak_bytes", "peak_gib", "peak_kind", "details"} <= set(row)
        assert row["backend"] == "cpu" and row["device"] == machine["device_name"]
        assert row["repeats"] == len(row["times_s"]) == 2 and all(t > 0 for t in row["times_s"])
        assert row["median_s"] == statistics.median(row["times_s"])
        assert row["peak_kind"] == "rss" and row["peak_bytes"] > 0
        assert row["peak_gib"] == pytest.approx(row["peak_bytes"] / 2**30)
    rows = {r["name"]: r for r in report["results"]}
    assert rows["generator-forward"]["params"]["batch"] == 1
    assert rows["generator-fwd+bwd"]["params"]["batch"] == suite.DEFAULT_BATCH
    assert rows["e4e-inversion"]["params"]["input_size"] == 256
    assert rows["extract-step"]["params"].items() >= {"sources": 4, "restarts": 1}.items()
    assert rows["extract-step"]["throughput"] is None and rows["extract-step"]["throughput_unit"] is None
    assert rows["transfer"]["params"]["images"] == 2
    fwd = rows["generator-fwd+bwd"]
    assert fwd["throughput"] == pytest.approx(4 / fwd["median_s"]) and fwd["throughput_unit"] == "images/s"

    console = Console(file=io.StringIO(), width=200)
    suite.render(report, console)
    text = console.file.getvalue()
    assert "CPU:" in text and "Backend: cpu" in text and "peak RSS GiB" in text
    assert all(name in text for name in suite.CASES) and "N = 4, K = 1" in text
    saved = reporting.save_json(report, tmp_path / "out" / "bench.json")
    assert json.loads(saved.read_text()) == json.loads(json.dumps(report))


def test_the_encoder_variant_cases(tiny_clip_plugin):
    report = suite.run_suite(**TINY, cases=["encoder-train-step", "encoder-extract"], clip=tiny_clip_plugin.name,
                             runner=suite.in_process_runner)
    train, extract = report["results"]
    assert "error" not in train and "error" not in extract, report["results"]
    # a training step at batch 1 over the published number of sources, the figure its seconds
    assert train["params"].items() >= {"size": 16, "sources": 5, "batch": 1, "clip": tiny_clip_plugin.name}.items()
    assert train["throughput"] is None and train["repeats"] == 2
    details = train["details"]
    assert details["optimizer"] == "ranger" and details["batchnorm"] == "frozen"
    assert len(details["losses"]) == 3 and all(loss > 0 for loss in details["losses"])  # warm-up + 2 timed
    assert details["losses"] != [details["losses"][0]] * 3  # the steps update the encoder
    assert train["peak_bytes"] > 0 and details["models_bytes"] > 0
    # every target of every timed call became an essence: targets/s from the targets per call
    assert extract["params"] == {"input_size": 256, "targets": 2, "max_channels": 8}
    assert extract["throughput"] == pytest.approx(2 / extract["median_s"]) and extract["throughput_unit"] == "targets/s"

    console = Console(file=io.StringIO(), width=200)
    suite.render(report, console)
    text = console.file.getvalue()
    assert "S = 5, batch 1" in text and "2 targets, 256 px in" in text and "targets/s" in text


def test_a_failed_case_is_reported_and_the_others_run():
    def runner(spec, workdir):
        if spec["case"] == "generator-fwd+bwd":
            return {"error": "worker killed by SIGKILL (likely out of memory)"}
        return suite.run_case(spec)

    report = suite.run_suite(**TINY, cases=["generator-fwd+bwd", "generator-forward"], runner=runner)
    failed, ok = report["results"]
    assert failed["error"].startswith("worker killed") and failed["median_s"] is None and failed["times_s"] == []
    assert "error" not in ok and ok["median_s"] > 0
    console = Console(file=io.StringIO(), width=200)
    suite.render(report, console)
    assert "FAILED generator-fwd+bwd: worker killed by SIGKILL" in console.file.getvalue()


def test_options_that_cannot_work():
    for kwargs, message in (
        ({"cases": ["generator-forward", "nope"]}, "unknown case(s) nope; choose from generator-forward"),
        ({"size": 24}, "--size must be a power of two"),
        ({"size": 8}, "--size must be a power of two of at least 16"),
        ({"repeats": 0}, "--repeats must be at least 1"),
    ):
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            suite.run_suite(**{**TINY, **kwargs})


def test_command_line_json_on_stdout(tmp_path, capsys, cli):
    """The one subprocess: the case runs in ``python -m essencekit.bench.suite --worker``."""
    out = tmp_path / "bench.json"
    code, stdout, stderr = cli(
        ["bench", "--json", "--size", "16", "--max-channels", "8", "--repeats", "1", "--backend", "cpu",
         "--only", "generator-forward", "-o", str(out)],
    )
    assert code == 0, stderr
    data = json.loads(stdout)
    (row,) = data["results"]
    assert row["name"] == "generator-forward" and "error" not in row and row["peak_bytes"] > 50 * 2**20
    assert row["median_s"] == row["times_s"][0] and data["machine"]["backend"] == "cpu"
    assert "[1/1] generator-forward" in stderr and f"saved {out}" in stderr
    assert json.loads(out.read_text()) == data


def test_command_line_table_saves_a_timestamped_file_here(tmp_path, monkeypatch, capsys, cli):
    monkeypatch.chdir(tmp_path)

    def runner(timeout=None):
        return suite.in_process_runner

    monkeypatch.setattr(suite, "subprocess_runner", runner)
    code, stdout, _ = cli(["bench", "--size", "16", "--max-channels", "8", "--repeats", "1", "--backend", "cpu",
                            "--only", "generator-forward"])
    assert code == 0
    assert "generator-forward" in stdout and "median s" in stdout and "CPU:" in stdout
    (saved,) = tmp_path.glob("essencekit-bench-cpu-*.json")
    assert json.loads(saved.read_text())["results"][0]["name"] == "generator-forward"


def _error_lines(text):
    return [line for line in text.splitlines() if line.startswith("Error")]


def test_command_line_errors_are_one_line(tmp_path, capsys, register_plugin, cli):
    code, stdout, stderr = cli(["bench", "--only", "generator-forward,fastest"])
    assert code == 2 and not stdout
    (line,) = _error_lines(stderr)
    assert "unknown case(s) fastest; choose from generator-forward" in line

    code, _, stderr = cli(["bench", "--backend", "tpu", "--size", "16"])  # a bad value: a usage error
    (line,) = _error_lines(stderr)
    assert code == 2 and "'--backend'" in line and "unknown backend 'tpu'" in line

    class Unavailable(Backend):
        name = "test-offline"

        def availability(self):
            return False, "it is switched off"

        @property
        def device(self):
            return torch.device("cpu")

    class Plugin:
        @essencekit.hookimpl
        def register_backends(self, register):
            register(Unavailable())

    register_plugin(Plugin(), "test-offline")
    code, _, stderr = cli(["bench", "--backend", "test-offline", "--size", "16"])
    (line,) = _error_lines(stderr)
    assert code == 2 and "not available here: it is switched off" in line

    code, _, stderr = cli(["bench", "--size", "16", "-o", str(tmp_path)])
    assert code == 1 and stderr.count("\n") == 1 and "a folder" in stderr


def test_shared_tables():
    columns = [("name", "left"), ("s", "right"), ("note", "left")]
    table = reporting.rich_table(columns, [reporting.SECTION, ["a", "1", "[red]x[/red]"], reporting.SECTION,
                                           ["b", "2", ""]])
    console = Console(file=io.StringIO(), width=80)
    console.print(table)
    text = console.file.getvalue()
    assert "[red]x[/red]" in text  # cells are plain text, not markup
    assert table.row_count == 2 and table.rows[0].end_section and not table.rows[1].end_section
    assert reporting.peak_label([{"peak_kind": "rss"}, {"peak_kind": "device"}]) == "peak GiB"
    assert reporting.fmt(None, ".2f") == "-" and reporting.fmt(2.375, ".2f", "x") == "2.38x"
