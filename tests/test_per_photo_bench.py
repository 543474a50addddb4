"""The per-photo benchmark's plumbing (benchmarks/compare/per_photo.py), at toy sizes and in this process."""

from __future__ import annotations

import json

from compare import per_photo as bench

from essencekit.backends import select_backend
from essencekit.hugepages import HUGE_PAGES_ENV


def test_the_loops_take_turns_and_report_the_breakdown():
    specs = []

    def runner(spec, workdir):
        specs.append(spec)
        return bench.in_process_runner(spec, workdir)

    cpu = select_backend("cpu")
    session = cpu.inference_session
    report = bench.benchmark(size=64, photos=1, runs=2, max_channels=8, runner=runner)
    # in turns, each loop once per round; only the reference's worker without huge pages
    assert [s["loop"] for s in specs] == ["reference", "before", "after"] * 2
    assert {s["loop"]: s["env"] for s in specs}["reference"] == {HUGE_PAGES_ENV: "0"}
    # the "before" loop changed a copy of the backend, not the registered one
    assert cpu.inference_session == session
    rows = {r["loop"]: r for r in report["results"]}
    assert rows["reference"]["vs_reference"] == 1.0 and "sections" not in rows["reference"]
    for loop in ("before", "after"):
        row = rows[loop]
        assert row["runs"] == 2 and len(row["runs_s_per_photo"]) == 2 and row["s_per_photo"] > 0
        assert set(row["sections"]) == set(bench.SECTIONS)
        assert sum(row["sections"].values()) <= row["s_per_photo"] * 1.01
        assert row["synthesis_alone_s"] > 0 and row["synthesis_inside_vs_alone"] > 0
    tables = bench.markdown_tables(report)
    assert "| synthesise |" in tables and "| after |" in tables
    json.dumps(report)


def test_the_aligner_finds_the_photos_face():
    from PIL import Image

    from essencekit.faces import align_faces

    faces = align_faces(Image.new("RGB", bench.PHOTO_SIZE), aligner=bench.fixed_aligner())
    assert len(faces) == 1 and 700 < faces[0].size < 900


def test_command_line_rejects_unknown_loops():
    assert bench.main(["--loops", "mine"]) == 2
