"""essencekit.inputs: the files, folders and glob patterns a run works on."""

from __future__ import annotations

import pytest

from essencekit import inputs
from essencekit.errors import EssencekitError

# --------------------------------------------------------------------------- inputs


def test_discovery_of_files_folders_and_globs(tmp_path):
    for folder in ("in/sub/.hidden", "in/out"):
        (tmp_path / folder).mkdir(parents=True)
    for name in ("in/b.png", "in/a.JPG", "in/notes.txt", "in/.x.png", "in/sub/c.webp", "in/sub/.hidden/d.png",
                 "in/w.safetensors", "in/out/old.png", "other.bin"):
        (tmp_path / name).write_bytes(b"x")
    found = inputs.discover([tmp_path / "in"])
    assert [s.rel.as_posix() for s in found] == ["a.JPG", "b.png", "w.safetensors"]
    assert [s.kind for s in found] == ["image", "image", "latents"]
    deep = inputs.discover([tmp_path / "in"], recursive=True, exclude=tmp_path / "in" / "out")
    assert [s.rel.as_posix() for s in deep] == ["a.JPG", "b.png", "w.safetensors", "sub/c.webp"]
    # an explicit file is always taken (then reported if it is no image); each file once
    listed = inputs.discover([tmp_path / "other.bin", str(tmp_path / "in" / "*.png"), tmp_path / "in" / "b.png"])
    assert [s.path.name for s in listed] == ["other.bin", "b.png"]
    with pytest.raises(EssencekitError, match="both an input folder and the output folder"):
        inputs.discover([tmp_path / "in"], exclude=tmp_path / "in")
    missing = inputs.discover([tmp_path / "nope.png", str(tmp_path / "*.gif")])
    assert [s.error.split(": ", 1)[1] for s in missing] == ["no such file or folder", "no file matches this pattern"]
