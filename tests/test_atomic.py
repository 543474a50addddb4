"""Atomic writes: complete files or none, with the permissions a plain open() gives."""

from __future__ import annotations

import os
import stat

import pytest

from essencekit.atomic import atomic_path, current_umask


@pytest.fixture
def umask():
    """Run a test under a chosen umask, restoring the caller's afterwards."""
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077], ids=["022", "002", "077"])
def test_written_files_get_the_mode_a_plain_open_gives(tmp_path, umask, mask):
    umask(mask)
    assert current_umask() == mask
    with open(tmp_path / "plain.txt", "w") as handle:
        handle.write("x")
    with atomic_path(tmp_path / "atomic.txt") as tmp:
        tmp.write_text("x")
    assert _mode(tmp_path / "atomic.txt") == _mode(tmp_path / "plain.txt") == 0o666 & ~mask


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_outputs_written_through_the_api_are_not_private(tmp_path, umask):
    """An essence saved by the library is readable by the group and others under umask 022."""
    import torch

    from essencekit.essence import Essence

    umask(0o022)
    path = tmp_path / "e.pt"
    Essence(direction=torch.zeros(4, 8)).save(path)
    assert _mode(path) == 0o644
