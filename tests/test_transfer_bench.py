"""The transfer benchmark's plumbing (benchmarks/compare/transfer.py), at toy sizes and in this process."""

from __future__ import annotations

import json

from compare import transfer as bench

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
    table = bench.markdown_table(report)
    assert table.count("\n") == 5 and "| reference | 2 | 1 |" in table
    json.dumps(report)


def test_command_line_rejects_unknown_loops():
    assert bench.main(["--loops", "mine"]) == 2
