"""``load_checkpoint``: every unreadable file becomes one line that says what is wrong with it."""

from __future__ import annotations

import pickle

import pytest
import torch

from essencekit.checkpoints import load_checkpoint
from essencekit.errors import EssencekitError


def _error(path, what="essence file") -> str:
    with pytest.raises(EssencekitError) as caught:
        load_checkpoint(path, what=what)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


def test_a_file_that_is_not_pytorch_says_so(tmp_path):
    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    message = _error(text)
    assert "is not an essence file: it is not a PyTorch file" in message and "re-download" not in message
    assert "is not a checkpoint" in _error(text, what="checkpoint")


@pytest.mark.parametrize("legacy", [False, True])
def test_a_truncated_torch_file_is_called_incomplete(tmp_path, legacy):
    whole = tmp_path / "whole.pt"
    torch.save({"direction": torch.zeros(4, 8)}, whole, _use_new_zipfile_serialization=not legacy)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole.read_bytes()[:40])
    assert "is the file complete?" in _error(cut)
    assert torch.equal(load_checkpoint(whole)["direction"], torch.zeros(4, 8))


def test_code_in_a_pickle_is_refused(tmp_path):
    class Hostile:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "hostile.pt"
    path.write_bytes(pickle.dumps(Hostile(), protocol=2))
    assert "will not unpickle" in _error(path)


def test_the_extension_does_not_decide_the_reader(tmp_path):
    # torch.load sends a path ending in .safetensors to safetensors; a renamed torch file still loads
    path = tmp_path / "renamed.safetensors"
    torch.save({"direction": torch.ones(2, 3)}, path)
    assert torch.equal(load_checkpoint(path)["direction"], torch.ones(2, 3))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    assert "not a PyTorch file" in _error(garbage)


def test_a_safetensors_file_is_read_by_its_content(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "weights.pt"  # the name says torch, the bytes say safetensors
    save_file({"g_ema.x": torch.arange(3.0)}, str(path))
    assert torch.equal(load_checkpoint(path)["g_ema.x"], torch.arange(3.0))
