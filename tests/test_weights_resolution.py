"""One weights resolver for every command: a file as given or a registered artifact's cached
file, its label in run metadata and its sha256, and one error for a file that is not there."""

from __future__ import annotations

import hashlib

import pytest

from essencekit.errors import EssencekitError
from essencekit.weights import resolve_weights, weights_identity, weights_label


def test_a_file_is_used_as_given_and_fingerprinted(tmp_path):
    path = tmp_path / "my-generator.pt"
    path.write_bytes(b"weights")
    assert resolve_weights(path, "stylegan2-ffhq") == path
    assert weights_identity(str(path), "stylegan2-ffhq") == (path, "my-generator.pt",
                                                             hashlib.sha256(b"weights").hexdigest())
    assert weights_label(path, "stylegan2-ffhq") == "my-generator.pt"


def test_a_missing_file_or_a_folder_is_one_error_naming_it(tmp_path):
    for spec in (tmp_path / "nope.pt", str(tmp_path / "nope.pt")):
        with pytest.raises(EssencekitError, match=r"^weights file not found: .*nope\.pt \(give a file or a regis"):
            resolve_weights(spec, "e4e-ffhq")
    with pytest.raises(EssencekitError, match="is a folder, not a weights file"):
        weights_identity(tmp_path, "e4e-ffhq")


def test_an_artifact_name_goes_to_the_cache(tmp_path):
    # the cache is empty in tests: the registered default is named with the command that fetches it
    assert weights_label(None, "e4e-ffhq") == "e4e-ffhq"
    with pytest.raises(EssencekitError, match="pull-weights"):
        resolve_weights(None, "e4e-ffhq")
    with pytest.raises(EssencekitError, match="pull-weights"):
        weights_identity("stylegan2-ffhq", "e4e-ffhq")
