"""The extraction benchmark's plumbing (benchmarks/compare/extract.py), at toy sizes and in this process."""

from __future__ import annotations

import json

import pytest
from compare import extract as bench

from essencekit.hugepages import HUGE_PAGES_ENV


@pytest.fixture
def report(tiny_clip_plugin):
    specs = []

    def runner(spec, workdir):
        specs.append(spec)
        return bench.in_process_runner(spec, workdir)

    result = bench.benchmark(
        size=64, sources=(2,), restarts=(2,), steps=2, clip=tiny_clip_plugin.name, max_channels=8,
        runner=runner,
    )
    # only the reference loop's worker runs without essencekit's huge pages
    assert {s["loop"]: s["env"] for s in specs} == {"reference": {HUGE_PAGES_ENV: "0"}, "essencekit": {}}
    return result


def test_both_loops_measure_the_same_problem(report):
    rows = {r["loop"]: r for r in report["results"]}
    assert set(rows) == {"reference", "essencekit"}
    for row in rows.values():
        assert "error" not in row and row["steps"] == 2 and row["median_step_s"] > 0 and row["peak_bytes"] > 0
    # the same sources, first direction and target: the first measured loss agrees across the
    # loops (exact resize vs the reference's 7x nearest + pooling)
    assert rows["essencekit"]["first_loss"] == pytest.approx(rows["reference"]["first_loss"], abs=1e-4)
    assert rows["essencekit"]["first_loss_diff"] < 1e-4
    # the reference trains restarts one after another: its time for K = 2 is twice one restart's
    assert rows["reference"]["per_step_for_restarts_s"] == pytest.approx(2 * rows["reference"]["median_step_s"])
    assert rows["essencekit"]["speedup_vs_reference"] > 0
    table = bench.markdown_table(report)
    assert table.count("\n") == 4 and "| reference | 2 | 2 |" in table
    json.dumps(report)


def test_command_line_rejects_unknown_loops(capsys):
    assert bench.main(["--loops", "mine"]) == 2
