"""``essencekit cache``: list, remove and prune, on a cache made in the test's own
ESSENCEKIT_HOME (conftest points it at a fresh folder per test)."""

from __future__ import annotations

import datetime
import io
import json
import os
import sys

import pytest
import torch

from essencekit import cache
from essencekit.aligners import FaceLandmarks
from essencekit.cli.output import human_size
from essencekit.latent_cache import CachedFace, CacheRecord, LatentCache

OLD = datetime.datetime(2020, 1, 1, 12).timestamp()
ENCODER = "ab" * 32


def _record() -> CacheRecord:
    lm = FaceLandmarks((1.0, 2.0), (3.0, 2.0), (1.5, 4.0), (2.5, 4.0), (0.0, 0.0, 5.0, 5.0), 0.9)
    transform = {"quad": [[0, 0], [0, 4], [4, 4], [4, 0]], "size": 1024, "photo_size": [8, 8]}
    return CacheRecord("largest", [CachedFace(0, lm, transform, 4.0)], [], {0: torch.zeros(18, 512)})


@pytest.fixture
def filled():
    """e4e-ffhq as pull-weights leaves it, an unfinished clip-rn50 download, and two W+ records:
    one last used in 2020, one now."""
    folder = cache.artifact_dir("e4e-ffhq")
    folder.mkdir(parents=True)
    ready = folder / "e4e_ffhq_encode.safe.pt"
    ready.write_bytes(b"w" * 150_000)
    stat = ready.stat()
    cache.write_record(cache.CacheRecord(
        "e4e-ffhq", ready.name, "0" * 64, stat.st_size, stat.st_mtime_ns, "1" * 64, 200_000, "test", "registry",
        "safe-checkpoint",
    ))
    partial = cache.artifact_dir("clip-rn50")
    partial.mkdir(parents=True)
    (partial / "RN50.pt.part").write_bytes(b"p" * 2_500)
    latents = LatentCache(ENCODER, "dlib")
    latents.store("cd" * 32, _record())
    latents.store("ef" * 32, _record())
    os.utime(latents.path("cd" * 32), (OLD, OLD))
    return {"e4e": folder, "rn50": partial, "old": latents.path("cd" * 32), "new": latents.path("ef" * 32)}


def _folder_size(folder) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name != ".lock")


def test_list_shows_weights_and_the_w_cache_with_sizes(filled, capsys, cli):
    code, out, _ = cli(["cache", "list", "--json"])
    assert code == 0
    data = json.loads(out)
    assert data["root"] == str(cache.cache_root())
    artifacts = {a["name"]: a for a in data["artifacts"]}
    assert artifacts["e4e-ffhq"]["status"] == "ready" and artifacts["e4e-ffhq"]["registered"]
    assert artifacts["e4e-ffhq"]["size"] == _folder_size(filled["e4e"]) and artifacts["e4e-ffhq"]["files"] == 2
    assert artifacts["clip-rn50"]["status"] == "partial" and artifacts["clip-rn50"]["size"] == 2_500
    [group] = data["latents"]
    record_size = filled["old"].stat().st_size + filled["new"].stat().st_size
    assert (group["recipe"], group["encoder"], group["aligner"]) == ("v1", ENCODER[:16], "dlib")
    assert group["entries"] == 2 and group["size"] == record_size
    assert group["oldest"] == "2020-01-01" and group["last_used"] == datetime.date.today().isoformat()
    assert data["size"] == _folder_size(filled["e4e"]) + 2_500 + record_size

    code, out, _ = cli(["cache", "list"])
    text = " ".join(out.split())
    assert code == 0 and "e4e-ffhq" in text and "clip-rn50" in text and "partial" in text
    assert human_size(_folder_size(filled["e4e"])) in text and "kB" in text  # SI sizes, as pull-weights --list
    assert f"Total: {human_size(data['size'])}" in text


def test_an_empty_cache_lists_nothing(capsys, cli):
    code, out, _ = cli(["cache", "list", "--json"])
    assert code == 0 and json.loads(out)["artifacts"] == [] and json.loads(out)["latents"] == []
    code, out, _ = cli(["cache", "list"])
    assert code == 0 and "is empty" in out


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_remove_refuses_names_not_in_the_cache(filled, capsys, cli):
    for name, expected in (("e4e-ffqh", "did you mean e4e-ffhq"), ("stylegan2-ffhq", "registered but not downloaded"),
                           ("nonsense", "not in the weight cache"), ("../latents", "not in the weight cache")):
        code, _, err = cli(["cache", "remove", name, "--yes"])
        message = " ".join(err.split())
        assert code == 1 and expected in message and "`essencekit cache list`" in message, name
    assert filled["old"].is_file() and filled["e4e"].is_dir()  # nothing was touched


def test_remove_asks_first(filled, capsys, monkeypatch, cli):
    # no terminal to ask on and no --yes: nothing happens
    code, _, err = cli(["cache", "remove", "e4e-ffhq"])
    assert code == 1 and "--yes" in err and filled["e4e"].is_dir()
    # asked, and declined
    monkeypatch.setattr(sys, "stdin", _Terminal("n\n"))
    code, _, err = cli(["cache", "remove", "e4e-ffhq"])
    assert code == 1 and "Nothing removed" in err and filled["e4e"].is_dir()
    # asked, and accepted
    monkeypatch.setattr(sys, "stdin", _Terminal("y\n"))
    code, out, err = cli(["cache", "remove", "e4e-ffhq"])
    assert code == 0 and "Remove e4e-ffhq" in err and "Removed e4e-ffhq" in out
    assert not filled["e4e"].exists() and filled["rn50"].is_dir()
    assert cache.artifact_state(cache.get_artifact("e4e-ffhq")).state == "missing"
    # --yes --json: no question, the result as JSON
    code, out, _ = cli(["cache", "remove", "clip-rn50", "--yes", "--json"])
    assert code == 0 and json.loads(out) == {
        "removed": "clip-rn50", "path": str(filled["rn50"]), "size": 2_500, "files": 1}
    assert not filled["rn50"].exists()
    # gone: pulling it again is the way back
    code, _, err = cli(["cache", "remove", "e4e-ffhq", "--yes"])
    assert code == 1 and "registered but not downloaded" in " ".join(err.split())



def test_remove_refuses_an_artifact_pull_weights_is_working_on(filled, capsys, cli):
    with cache.artifact_lock("e4e-ffhq"):
        code, _, err = cli(["cache", "remove", "e4e-ffhq", "--yes"])
    assert code == 1 and "is working on it" in " ".join(err.split())
    assert (filled["e4e"] / "e4e_ffhq_encode.safe.pt").is_file()


def test_a_folder_left_with_only_a_lock_is_not_an_artifact(filled, capsys, cli):
    """A pull that failed before writing anything leaves weights/<name>/.lock: no 0 B row."""
    leftover = cache.artifact_dir("joker")
    leftover.mkdir(parents=True)
    (leftover / cache.LOCK_FILE).write_bytes(b"")
    code, out, _ = cli(["cache", "list", "--json"])
    assert code == 0 and "joker" not in {a["name"] for a in json.loads(out)["artifacts"]}
    code, out, _ = cli(["cache", "list"])
    assert code == 0 and "joker" not in out and "unrecorded" not in out
    code, out, err = cli(["cache", "remove", "joker", "--yes"])
    assert code == 1 and "nothing to remove for joker" in " ".join(err.split()) and "Removed" not in out


def test_remove_measures_only_the_one_artifact(filled, capsys, monkeypatch, cli):
    from essencekit import cache_admin, latent_cache

    def no_walk():
        raise AssertionError("cache remove walked the W+ cache")

    measured = []
    real = cache_admin._artifact_usage
    monkeypatch.setattr(latent_cache, "entries", no_walk)
    monkeypatch.setattr(cache_admin, "_artifact_usage", lambda *a: measured.append(a[0]) or real(*a))
    monkeypatch.setattr(sys, "stdin", _Terminal("y\n"))
    code, out, err = cli(["cache", "remove", "e4e-ffhq"])
    assert code == 0 and "Removed e4e-ffhq" in out, err
    assert measured == [filled["e4e"]]  # once, for the question and the report


def test_prune_refuses_a_day_after_today_and_loose_dates(filled, capsys, cli):
    for value, expected in (("2099-01-01", "after today"), ("20210101", "YYYY-MM-DD"), ("2021-1-1", "YYYY-MM-DD"),
                            ("2021-02-30", "YYYY-MM-DD")):
        code, _, err = cli(["cache", "prune", "--older-than", value])
        assert code == 2 and expected in " ".join(err.split()), value
    assert filled["old"].is_file() and filled["new"].is_file()  # nothing was pruned
    tomorrow = (datetime.date.today() + datetime.timedelta(days=1)).isoformat()
    assert cli(["cache", "prune", "--older-than", tomorrow])[0] == 2
    code, out, _ = cli(["cache", "prune", "--older-than", datetime.date.today().isoformat(), "--dry-run", "--json"])
    assert code == 0 and json.loads(out)["entries"] == 1  # today is fine: only the 2020 record is older


def test_prune_removes_w_records_unused_since_a_date(filled, capsys, cli):
    code, out, _ = cli(["cache", "prune", "--older-than", "2021-01-01", "--dry-run", "--json"])
    size = filled["old"].stat().st_size
    nothing_aligned = {"before": "2021-01-01", "entries": 0, "size": 0, "dry_run": True}
    assert code == 0 and json.loads(out) == {"before": "2021-01-01", "entries": 1, "size": size, "dry_run": True,
                                             "aligned": nothing_aligned, "features": nothing_aligned}
    assert filled["old"].is_file()

    code, out, _ = cli(["cache", "prune", "--older-than", "2021-01-01"])
    assert code == 0 and "Removed 1 W+ record(s)" in out
    assert not filled["old"].exists() and not filled["old"].parent.exists()  # its empty folder too
    assert filled["new"].is_file() and filled["e4e"].is_dir()  # weights are never pruned

    code, _, err = cli(["cache", "prune", "--older-than", "last week"])
    assert code == 2 and "YYYY-MM-DD" in err


def test_a_cache_hit_counts_as_a_use(filled, capsys, cli):
    """What transfer still uses survives a prune, however long ago it was written."""
    assert LatentCache(ENCODER, "dlib").load("cd" * 32) is not None
    code, out, _ = cli(["cache", "prune", "--older-than", "2021-01-01", "--json"])
    assert code == 0 and json.loads(out)["entries"] == 0 and filled["old"].is_file()


def test_listing_the_cache_does_not_import_torch(filled):
    """`cache list` reads sizes and records only: no second of torch start-up for it."""
    import subprocess

    probe = ("import sys; from essencekit.cli import main\n"
             "try:\n    main(['cache', 'list', '--json'])\n"
             "except SystemExit as e:\n    assert not e.code, e.code\n"
             "print('torch' in sys.modules, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "ESSENCEKIT_HOME": str(cache.cache_root())})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["latents"][0]["entries"] == 2
    assert result.stderr.strip().splitlines()[-1] == "False"
