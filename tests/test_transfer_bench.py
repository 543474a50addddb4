"""The transfer benchmark's plumbing, at toy sizes and in this process."""

from __future__ import annotations

import json

from essencekit.bench import transfer as bench
from essencekit.hugepages import HUGE_PAGES_ENV


def test_the_three_loops_run_and_compare():
    specs = []

    def runner(spec, workdir):
        specs.append(spec)
        return bench.in_process_runner(spec, workdir)

    report = bench.benchmark(size=64, images=2, max_channels=8, batch_size=2, runner=runner)
    # only the reference loop's worker runs without essencekit's huge pages
    assert {s["loop"]: s["env"] for s in specs} == {"reference": {HUGE_PAGES_ENV: "0"}, "single": {}, "batched": {}}
    rows = {r["loop"]: r for r in report["results"]}
    assert set(rows) == {"reference", "single", "batched"}
    for row in rows.values():
        assert "error" not in row and row["images"] == 2 and row["images_per_s"] > 0 and row["peak_bytes"] > 0
    assert rows["batched"]["batch_size"] == 2 and rows["single"]["batch_size"] == 1
    assert rows["batched"]["vs_reference"] > 0 and rows["batched"]["vs_single"] > 0
    assert report["goals"] == []  # goals are for the full-size models only
    table = bench.markdown_table(report)
    assert table.count("\n") == 5 and "| reference | 2 | 1 |" in table
    json.dumps(report)


def test_goals_read_the_right_rows():
    rows = [{"loop": "batched", "images_per_s": 60.0, "vs_reference": 1.6, "vs_single": 0.99}]
    cpu = bench.evaluate_goals(rows, {"device": "cpu"}, 1024, None)
    assert [(g["goal"].startswith(">= 1.5x"), g["met"]) for g in cpu] == [(True, True), (False, False)]
    gpu = bench.evaluate_goals(rows, {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3"}, 1024, None)
    assert [g["met"] for g in gpu] == [True, False]


def test_command_line_rejects_unknown_loops():
    assert bench.main(["--loops", "mine"]) == 2
