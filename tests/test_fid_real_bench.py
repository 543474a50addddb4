"""benchmarks/fid_real.py runs and checks what it reads back (a tiny run: 2 small images)."""

from __future__ import annotations

import fid_real


def test_the_real_image_benchmark_runs_and_reads_back_exactly(capsys):
    assert fid_real.main(["--images", "2", "--size", "48"]) == 0
    out = capsys.readouterr().out
    assert "from the cache" in out and "(2 cached)" in out and "exactly: True" in out
