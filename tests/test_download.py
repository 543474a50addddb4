"""The download engine against a real HTTP server on 127.0.0.1 (tests/http_server.py)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import requests
from http_server import closed_port_url, endless, html, sequence, serve, serve_bytes, silent, sleep_then, status

from essencekit import cache
from essencekit.download import (
    DownloadError,
    NoNetworkError,
    OfflineError,
    Progress,
    RetryPolicy,
    download,
    drive_confirmation_url,
)
from essencekit.errors import EssencekitError

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


@pytest.fixture
def sleeps():
    return Sleeps()


@pytest.fixture
def policy(sleeps):
    # no real waiting; short timeouts so a slow server is detected in well under a second
    return RetryPolicy(attempts=4, backoff=0.5, factor=2.0, connect_timeout=2.0, read_timeout=0.4,
                       chunk_size=32 * 1024, sleep=sleeps)


@pytest.fixture
def server():
    with serve() as running:
        yield running


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_clean_download(server, tmp_path, policy):
    url = server.route("/file.bin", serve_bytes(DATA))
    dest = tmp_path / "file.bin"

    events = []

    class Record(Progress):
        def start(self, label, total, completed=0):
            events.append(("start", label, total, completed))

        def update(self, completed):
            events.append(("update", completed))

    result = download([url], dest, sha256=SHA, size=len(DATA), label="thing", policy=policy, progress=Record())

    assert dest.read_bytes() == DATA
    assert result.sha256 == SHA and result.size == len(DATA) and result.url == url
    assert _leftovers(tmp_path) == ["file.bin"]  # no .part left
    assert events[0] == ("start", "thing", len(DATA), 0)
    assert events[-1] == ("update", len(DATA))
    assert len(server.requests_for("/file.bin")) == 1
    assert server.requests_for("/file.bin")[0].range is None


def test_dropped_connection_resumes_with_range_for_only_the_rest(server, tmp_path, policy, sleeps):
    cut = 4 * policy.chunk_size  # a chunk boundary: a torn last chunk is discarded by urllib3
    url = server.route("/file.bin", sequence(serve_bytes(DATA, drop_after=cut), serve_bytes(DATA)))
    dest = tmp_path / "file.bin"

    download([url], dest, sha256=SHA, size=len(DATA), policy=policy)

    assert dest.read_bytes() == DATA
    seen = server.requests_for("/file.bin")
    assert [r.range for r in seen] == [None, f"bytes={cut}-"]  # only the rest was asked for
    assert sleeps == [0.5]  # one backoff before the resume
    assert _leftovers(tmp_path) == ["file.bin"]


def test_server_that_ignores_range_restarts_cleanly(server, tmp_path, policy):
    url = server.route("/file.bin", serve_bytes(DATA, ranges=False))
    dest = tmp_path / "file.bin"
    # a part left by an earlier, interrupted run (with different bytes than the server's)
    (tmp_path / "file.bin.part").write_bytes(b"x" * 1000)

    download([url], dest, sha256=SHA, size=len(DATA), policy=policy)

    assert dest.read_bytes() == DATA  # not b"x"*1000 + DATA
    assert [r.range for r in server.requests_for("/file.bin")] == ["bytes=1000-"]
    assert _leftovers(tmp_path) == ["file.bin"]


def test_wrong_bytes_are_deleted_and_the_next_mirror_is_used(server, tmp_path, policy):
    wrong = bytes(reversed(DATA))
    bad = server.route("/bad/file.bin", serve_bytes(wrong))
    good = server.route("/good/file.bin", serve_bytes(DATA))
    dest = tmp_path / "file.bin"

    result = download([bad, good], dest, sha256=SHA, size=len(DATA), policy=policy)

    assert result.url == good and dest.read_bytes() == DATA
    assert len(server.requests_for("/bad/file.bin")) == 1  # a wrong file is not retried
    assert _leftovers(tmp_path) == ["file.bin"]


def test_wrong_bytes_everywhere_leave_nothing_and_name_the_mirror(server, tmp_path, policy):
    bad = server.route("/bad/file.bin", serve_bytes(bytes(reversed(DATA))))
    dest = tmp_path / "file.bin"

    with pytest.raises(DownloadError) as caught:
        download([bad], dest, sha256=SHA, size=len(DATA), label="thing", policy=policy)

    message = str(caught.value)
    assert "\n" not in message
    assert f"127.0.0.1:{server.port}/bad/file.bin" in message and "sha256 mismatch" in message
    assert _leftovers(tmp_path) == []  # neither the file nor a part


def test_404_is_not_retried_and_the_next_mirror_serves(server, tmp_path, policy, sleeps):
    missing = server.route("/gone/file.bin", status(404))
    good = server.route("/file.bin", serve_bytes(DATA))
    dest = tmp_path / "file.bin"

    result = download([missing, good], dest, sha256=SHA, policy=policy)

    assert result.url == good
    assert len(server.requests_for("/gone/file.bin")) == 1
    assert sleeps == []


def test_403_and_404_everywhere_give_one_clear_line(server, tmp_path, policy):
    urls = [server.route("/a/file.bin", status(403)), server.route("/b/file.bin", status(404))]
    with pytest.raises(DownloadError) as caught:
        download(urls, tmp_path / "file.bin", sha256=SHA, label="thing", policy=policy, hint="try --from")
    message = str(caught.value)
    assert "HTTP 403" in message and "HTTP 404" in message and message.endswith("try --from")
    assert "\n" not in message
    assert len(server.requests) == 2


def test_500_twice_then_success_with_backoff(server, tmp_path, policy, sleeps):
    url = server.route("/file.bin", sequence(status(500), status(503), serve_bytes(DATA)))
    dest = tmp_path / "file.bin"

    download([url], dest, sha256=SHA, size=len(DATA), policy=policy)

    assert dest.read_bytes() == DATA
    assert len(server.requests_for("/file.bin")) == 3
    assert sleeps == [0.5, 1.0]  # exponential backoff, injected


def test_5xx_gives_up_after_the_policy_attempts(server, tmp_path, policy, sleeps):
    other = server.route("/other/file.bin", serve_bytes(DATA))
    url = server.route("/file.bin", status(502))
    result = download([url, other], tmp_path / "file.bin", sha256=SHA, policy=policy)
    assert result.url == other
    assert len(server.requests_for("/file.bin")) == policy.attempts
    assert sleeps == [0.5, 1.0, 2.0]


def test_slow_server_hits_the_timeout_then_succeeds(server, tmp_path, policy, sleeps):
    url = server.route("/file.bin", sequence(sleep_then(1.0, serve_bytes(DATA)), serve_bytes(DATA)))
    dest = tmp_path / "file.bin"

    started = time.monotonic()
    download([url], dest, sha256=SHA, size=len(DATA), policy=policy)

    assert dest.read_bytes() == DATA
    assert len(server.requests_for("/file.bin")) == 2
    assert time.monotonic() - started < 1.0  # the 0.4 s read timeout fired, not the server's 1 s
    assert len(sleeps) == 1


def test_stall_mid_body_times_out_and_resumes(server, tmp_path, policy):
    # first answer: 100 kB, then the server stalls for longer than the read timeout
    stall = serve_bytes(DATA, drop_after=None, chunk=100_000, chunk_delay=1.0)
    url = server.route("/file.bin", sequence(stall, serve_bytes(DATA)))
    dest = tmp_path / "file.bin"

    download([url], dest, sha256=SHA, size=len(DATA), policy=policy)

    assert dest.read_bytes() == DATA
    ranges = [r.range for r in server.requests_for("/file.bin")]
    assert ranges[0] is None and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"


def test_always_slow_server_fails_with_timed_out(server, tmp_path, policy):
    url = server.route("/file.bin", sleep_then(1.0, serve_bytes(DATA)))
    with pytest.raises(DownloadError, match="timed out"):
        download([url], tmp_path / "file.bin", sha256=SHA, policy=RetryPolicy(
            attempts=2, backoff=0, connect_timeout=1, read_timeout=0.2, sleep=lambda s: None))
    assert _leftovers(tmp_path) == []


def test_html_answer_is_not_the_file(server, tmp_path, policy):
    page = server.route("/page/file.bin", html("<html><body>Please log in</body></html>"))
    with pytest.raises(DownloadError, match="web page"):
        download([page], tmp_path / "file.bin", sha256=SHA, policy=policy)
    assert _leftovers(tmp_path) == []


def test_google_drive_confirmation_form_is_followed(server, tmp_path, policy):
    form = f"""<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>
    <p>Google Drive can't scan this file for viruses.</p>
    <form id="download-form" action="{server.base}/download" method="get">
      <input type="submit" value="Download anyway"/>
      <input type="hidden" name="id" value="FILEID">
      <input type="hidden" name="export" value="download">
      <input type="hidden" name="confirm" value="t">
      <input type="hidden" name="uuid" value="1234-abcd">
    </form></body></html>"""
    first = server.route("/uc", html(form))
    server.route("/download", serve_bytes(DATA))
    dest = tmp_path / "file.bin"

    download([first + "?export=download&id=FILEID"], dest, sha256=SHA, size=len(DATA), policy=policy)

    assert dest.read_bytes() == DATA
    (followed,) = server.requests_for("/download")
    assert followed.query == {"id": ["FILEID"], "export": ["download"], "confirm": ["t"], "uuid": ["1234-abcd"]}


def test_google_drive_quota_page_is_reported():
    page = "<html><title>Google Drive - Quota exceeded</title><body>Too many users have viewed or downloaded this file recently.</body></html>"
    assert drive_confirmation_url(page, "https://drive.google.com/uc?id=x") is None
    from essencekit.download import _html_reason

    assert "quota" in _html_reason(page, "https://drive.google.com/uc?id=x")


def test_old_drive_confirm_link_is_followed():
    page = '<a id="uc-download-link" href="/uc?export=download&amp;confirm=AbCd&amp;id=XYZ">Download anyway</a>'
    assert drive_confirmation_url(page, "https://drive.google.com/uc?id=XYZ") == \
        "https://drive.google.com/uc?export=download&confirm=AbCd&id=XYZ"


def test_size_mismatch_is_not_downloaded(server, tmp_path, policy):
    url = server.route("/file.bin", serve_bytes(DATA[:1000]))
    with pytest.raises(DownloadError, match="expected 300,000"):
        download([url], tmp_path / "file.bin", sha256=SHA, size=len(DATA), policy=policy)
    assert _leftovers(tmp_path) == []


def test_complete_part_from_an_interrupted_run_is_checked_without_the_network(tmp_path, policy):
    (tmp_path / "file.bin.part").write_bytes(DATA)
    download([closed_port_url()], tmp_path / "file.bin", sha256=SHA, size=len(DATA), policy=policy)
    assert _leftovers(tmp_path) == ["file.bin"]


def test_ctrl_c_leaves_only_the_part_then_resumes(server, tmp_path, policy):
    url = server.route("/file.bin", serve_bytes(DATA))
    dest = tmp_path / "file.bin"

    class Interrupt(Progress):
        def update(self, completed):
            if completed >= 64 * 1024:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        download([url], dest, sha256=SHA, size=len(DATA), policy=policy, progress=Interrupt())
    assert _leftovers(tmp_path) == ["file.bin.part"]
    kept = (tmp_path / "file.bin.part").stat().st_size
    assert 0 < kept < len(DATA)

    download([url], dest, sha256=SHA, size=len(DATA), policy=policy)
    assert dest.read_bytes() == DATA
    assert server.requests_for("/file.bin")[-1].range == f"bytes={kept}-"


def test_offline_mode_makes_no_request(server, tmp_path, policy, monkeypatch):
    url = server.route("/file.bin", serve_bytes(DATA))
    monkeypatch.setenv("ESSENCEKIT_OFFLINE", "1")
    with pytest.raises(OfflineError, match="ESSENCEKIT_OFFLINE=1"):
        download([url], tmp_path / "file.bin", sha256=SHA, policy=policy)
    assert server.requests == []


def test_no_network_is_one_line_without_retries(tmp_path, policy, sleeps):
    urls = [closed_port_url("/a.bin"), closed_port_url("/b.bin")]
    with pytest.raises(NoNetworkError) as caught:
        download(urls, tmp_path / "file.bin", sha256=SHA, label="thing", policy=policy)
    message = str(caught.value)
    assert message.startswith("no network: cannot reach 127.0.0.1:") and "\n" not in message
    assert sleeps == []
    assert _leftovers(tmp_path) == []


def test_disk_full_while_writing_removes_the_part(server, tmp_path, policy):
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    url = server.route("/file.bin", serve_bytes(DATA))
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").symlink_to("/dev/full")  # every write fails with ENOSPC

    with pytest.raises(cache.DiskFullError) as caught:
        download([url], dest, sha256=SHA, size=len(DATA), policy=policy)
    assert str(caught.value).startswith("disk full while writing")
    assert "ESSENCEKIT_HOME" in str(caught.value)
    assert _leftovers(tmp_path) == []


def test_not_enough_space_is_said_before_downloading(server, tmp_path, policy, monkeypatch):
    url = server.route("/file.bin", serve_bytes(DATA))
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(cache.DiskFullError, match="not enough disk space"):
        download([url], tmp_path / "file.bin", sha256=SHA, size=len(DATA), policy=policy)
    assert _leftovers(tmp_path) == []


def test_unwritable_folder_is_one_line(server, tmp_path, policy):
    url = server.route("/file.bin", serve_bytes(DATA))
    with pytest.raises(cache.CachePermissionError) as caught:
        download([url], Path("/sys/essencekit-test/file.bin"), sha256=SHA, policy=policy)
    assert "ESSENCEKIT_HOME or --cache-dir" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores file permissions")
def test_permission_denied_is_one_line(server, tmp_path, policy):
    url = server.route("/file.bin", serve_bytes(DATA))
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(cache.CachePermissionError, match="permission denied"):
            download([url], folder / "file.bin", sha256=SHA, policy=policy)
    finally:
        folder.chmod(0o700)


# --------------------------------------------------------------------------- locks


def test_lock_blocks_a_second_holder_until_released(tmp_path):
    waits = []
    inside = threading.Event()
    release = threading.Event()
    order = []

    def first():
        with cache.artifact_lock("thing"):
            order.append("first in")
            inside.set()
            release.wait(5)
            order.append("first out")

    thread = threading.Thread(target=first)
    thread.start()
    inside.wait(5)
    threading.Timer(0.3, release.set).start()
    with cache.artifact_lock("thing", poll=0.02, on_wait=waits.append):
        order.append("second in")
    thread.join()
    assert order == ["first in", "first out", "second in"]
    assert len(waits) == 1 and "pid" in waits[0]


def test_lock_timeout_names_the_holder(tmp_path):
    with cache.artifact_lock("thing"):
        with pytest.raises(cache.LockTimeout, match=r"held by pid \d+"):
            with cache.artifact_lock("thing", timeout=0.1, poll=0.02):
                pass


def test_stale_lock_of_a_killed_process_does_not_block(tmp_path):
    home = os.environ["ESSENCEKIT_HOME"]
    script = textwrap.dedent(
        """
        import sys, time
        from essencekit import cache
        with cache.artifact_lock("thing"):
            print("locked", flush=True)
            time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "ESSENCEKIT_HOME": home})
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(cache.LockTimeout):  # really held while the process lives
            with cache.artifact_lock("thing", timeout=0.1, poll=0.02):
                pass
        child.kill()  # SIGKILL: no cleanup runs; the lock file stays behind
        child.wait(10)
        lock_file = cache.artifact_dir("thing") / cache.LOCK_FILE
        assert lock_file.exists() and "pid" in lock_file.read_text()
        started = time.monotonic()
        with cache.artifact_lock("thing", timeout=5, poll=0.02):
            pass
        assert time.monotonic() - started < 1
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)


def test_lock_file_with_a_dead_pid_is_ignored(tmp_path):
    folder = cache.artifact_dir("thing")
    folder.mkdir(parents=True)
    (folder / cache.LOCK_FILE).write_text('{"pid": 999999, "host": "elsewhere", "since": "2020-01-01"}')
    with cache.artifact_lock("thing", timeout=1, poll=0.02):
        pass


def test_errors_are_essencekit_errors():
    assert issubclass(DownloadError, EssencekitError) and issubclass(OfflineError, EssencekitError)


def test_a_content_check_refusal_deletes_the_part_and_tries_the_next_mirror(server, tmp_path, policy):
    junk = server.route("/junk/file.bin", serve_bytes(b"not it" * 1000))
    good = server.route("/good/file.bin", serve_bytes(DATA))
    dest = tmp_path / "file.bin"
    seen = []

    def check(path):
        seen.append(path.name)
        if path.read_bytes()[:6] == b"not it":
            raise EssencekitError("not the expected kind of file")

    result = download([junk, good], dest, check=check, policy=policy)  # unpinned: only the check guards it

    assert result.url == good and dest.read_bytes() == DATA
    assert seen == ["file.bin.part", "file.bin.part"]  # checked before the rename, never under the final name
    assert _leftovers(tmp_path) == ["file.bin"]

    with pytest.raises(DownloadError) as caught:
        download([junk], tmp_path / "other.bin", check=check, policy=policy)
    assert "served a file that is not the expected kind of file (deleted)" in str(caught.value)
    assert caught.value.by_host == [f"127.0.0.1:{server.port}: served a file that is not the expected kind of file (deleted)"]
    assert _leftovers(tmp_path) == ["file.bin"]


# --------------------------------------------------------------------------- hostile mirrors (issue 11)


class MaxProgress(Progress):
    """Remembers the most bytes the engine said were in the part file."""

    def __init__(self):
        self.most = 0

    def start(self, label, total, completed=0):
        self.most = max(self.most, completed)

    def update(self, completed):
        self.most = max(self.most, completed)


def test_a_stream_longer_than_the_registered_size_is_cut_at_once(server, tmp_path, policy):
    flood = endless(limit=48 * 1024 * 1024)
    url = server.route("/file.bin", flood)
    progress = MaxProgress()

    with pytest.raises(DownloadError) as caught:
        download([url], tmp_path / "file.bin", sha256=SHA, size=len(DATA), label="thing", policy=policy,
                 progress=progress)

    message = str(caught.value)
    assert f"127.0.0.1:{server.port}/file.bin: sent more than the file can be" in message
    assert "300,000 bytes expected" in message and "\n" not in message
    assert progress.most <= len(DATA)  # never a byte past the registered size on disk
    assert _leftovers(tmp_path) == []
    assert flood.sent[0] < 16 * 1024 * 1024  # the server was cut off, not drained (socket buffers aside)


def test_unknown_size_is_capped_by_essencekit_max_download(server, tmp_path, policy, monkeypatch):
    url = server.route("/file.bin", endless(limit=48 * 1024 * 1024))
    monkeypatch.setenv("ESSENCEKIT_MAX_DOWNLOAD", "1MB")
    progress = MaxProgress()

    with pytest.raises(DownloadError, match=r"1\.0 MB allowed for a file of unknown size; raise ESSENCEKIT_MAX_DOWN"):
        download([url], tmp_path / "file.bin", policy=policy, progress=progress)  # no size, no sha256
    assert progress.most <= 1_000_000 and _leftovers(tmp_path) == []

    monkeypatch.setenv("ESSENCEKIT_MAX_DOWNLOAD", "lots")
    with pytest.raises(EssencekitError, match=r"^ESSENCEKIT_MAX_DOWNLOAD='lots' is not a size"):
        download([url], tmp_path / "file.bin", policy=policy)


def test_an_announced_length_over_the_cap_is_refused_before_streaming(server, tmp_path, policy, monkeypatch):
    url = server.route("/file.bin", serve_bytes(DATA))
    monkeypatch.setenv("ESSENCEKIT_MAX_DOWNLOAD", "100000")
    with pytest.raises(DownloadError, match="announces 0.3 MB, more than the 0.1 MB allowed"):
        download([url], tmp_path / "file.bin", policy=policy)
    assert _leftovers(tmp_path) == []


SECRETS = ("s3cret-pw", "tok-123")


def test_credentials_and_query_tokens_are_used_but_never_shown(server, tmp_path, policy):
    server.route("/private/file.bin", serve_bytes(DATA))
    server.route("/flaky/file.bin", status(503))
    flaky = f"http://alice:s3cret-pw@127.0.0.1:{server.port}/flaky/file.bin?token=tok-123"
    private = f"http://alice:s3cret-pw@127.0.0.1:{server.port}/private/file.bin?token=tok-123&sig=tok-123"
    notes = []

    result = download([flaky, private], tmp_path / "file.bin", sha256=SHA, policy=policy, notify=notes.append)

    seen = server.requests_for("/private/file.bin")[0]
    assert seen.headers["authorization"] == "Basic YWxpY2U6czNjcmV0LXB3"  # alice:s3cret-pw, really sent
    assert seen.query == {"token": ["tok-123"], "sig": ["tok-123"]}
    assert result.url == f"http://***@127.0.0.1:{server.port}/private/file.bin?token=***&sig=***"
    assert any("attempt 2/4" in note for note in notes)
    for text in [*notes, result.url]:
        assert not any(secret in text for secret in SECRETS), text
        assert "alice" not in text

    with pytest.raises(DownloadError) as caught:
        download([flaky], tmp_path / "other.bin", sha256=SHA, policy=policy, notify=notes.append)
    message = str(caught.value)
    assert f"127.0.0.1:{server.port}/flaky/file.bin: HTTP 503" in message
    assert not any(secret in text for secret in SECRETS for text in [message, *caught.value.by_host, *notes])


def test_redact_url():
    from essencekit.urls import redact_in, redact_url

    assert redact_url("https://u:p%40ss@Host.example:8443/a/b.pt?X-Amz-Signature=abc&flag#frag") == \
        "https://***@host.example:8443/a/b.pt?X-Amz-Signature=***&***"
    assert redact_url("https://ghp_0123456789@[::1]/x") == "https://***@[::1]/x"
    plain = "https://huggingface.co/timm/x/resolve/main/open_clip_model.safetensors"
    assert redact_url(plain) == plain and redact_url(redact_url(plain)) == plain
    quoted = "HTTPSConnectionPool(host='cdn.example', port=443): Max retries exceeded with url: /f?Signature=zz9"
    assert redact_in(quoted + " https://u:pw-77@h/f", "https://u:pw-77@h/f") == (
        "HTTPSConnectionPool(host='cdn.example', port=443): Max retries exceeded with url: /f?Signature=*** "
        "https://***@h/f")


def test_redact_url_keeps_public_query_values():
    from essencekit.urls import redact_in, redact_url

    # a public registry link must stay usable when --list --json shows it
    drive = "https://drive.usercontent.google.com/download?id=1AbC_xyz&export=download&confirm=t"
    assert redact_url(drive) == drive
    assert redact_url("https://h/f?id=7&sig=s3&Token=t0&X-Goog-Credential=c&client_secret=cs&X-Amz-Date=d") == \
        "https://h/f?id=7&sig=***&Token=***&X-Goog-Credential=***&client_secret=***&X-Amz-Date=***"
    assert redact_in("GET https://cdn/f?id=7&token=t0 failed", "https://other/f") == \
        "GET https://cdn/f?id=7&token=*** failed"


@pytest.mark.parametrize("after_headers", [False, True], ids=["no-answer", "headers-then-nothing"])
def test_a_server_that_never_answers_is_left_after_one_retry(server, tmp_path, sleeps, monkeypatch, after_headers):
    hung = server.route("/hung/file.bin", silent(announce=len(DATA) if after_headers else None))
    good = server.route("/good/file.bin", serve_bytes(DATA))
    monkeypatch.setenv("ESSENCEKIT_READ_TIMEOUT", "0.3")  # wins over the policy's 60 s
    policy = RetryPolicy(attempts=5, backoff=1.0, connect_timeout=5, read_timeout=60, sleep=sleeps)
    notes = []

    started = time.monotonic()
    result = download([hung, good], tmp_path / "file.bin", sha256=SHA, size=len(DATA), label="thing",
                      policy=policy, notify=notes.append)

    assert result.url == good and time.monotonic() - started < 5
    assert len(server.requests_for("/hung/file.bin")) == 2  # one retry, not five
    assert sleeps == [1.0]
    retry, moving_on = notes
    assert retry == (f"thing: 127.0.0.1:{server.port}/hung/file.bin timed out: "
                     f"{'sent nothing' if after_headers else 'no answer within'}"
                     f"{'' if after_headers else ' 0.3 s'}{' for 0.3 s' if after_headers else ''}; "
                     "retrying in 1 s (attempt 2/2)")  # a silent mirror gets stall_retries=1 more try
    assert moving_on.startswith(f"thing: 127.0.0.1:{server.port}/hung/file.bin failed (timed out")
    assert "gave up after 2 silent tries" in moving_on
    assert moving_on.endswith(f"trying the next mirror, 127.0.0.1:{server.port}/good/file.bin")


def test_retries_are_said_on_stderr_by_default(server, tmp_path, policy, capsys):
    url = server.route("/file.bin", sequence(status(500), status(503), serve_bytes(DATA)))
    download([url], tmp_path / "file.bin", sha256=SHA, label="thing", policy=policy)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"thing: 127.0.0.1:{server.port}/file.bin HTTP 500 Internal Server Error; retrying in 0.5 s (attempt 2/4)",
        f"thing: 127.0.0.1:{server.port}/file.bin HTTP 503 Service Unavailable; retrying in 1 s (attempt 3/4)",
    ]


@pytest.mark.parametrize("name", ["ESSENCEKIT_CONNECT_TIMEOUT", "ESSENCEKIT_READ_TIMEOUT"])
@pytest.mark.parametrize("value", ["soon", "0", "-1", "nan"])
def test_an_invalid_timeout_setting_is_one_clear_error(server, tmp_path, policy, monkeypatch, name, value):
    url = server.route("/file.bin", serve_bytes(DATA))
    monkeypatch.setenv(name, value)
    with pytest.raises(EssencekitError) as caught:
        download([url], tmp_path / "file.bin", sha256=SHA, policy=policy)
    assert str(caught.value) == (f"{name}={value!r} is not a number of seconds: set it to a positive number "
                                 "such as 30, or unset it")
    assert server.requests == []


class _LocalOnly(requests.Session):
    """A session that records every URL asked for and refuses any host but 127.0.0.1."""

    def __init__(self):
        super().__init__()
        self.asked = []

    def get(self, url, **kwargs):
        self.asked.append(url)
        if not url.startswith("http://127.0.0.1:"):
            raise requests.exceptions.ConnectionError("Connection refused (test: no outside network)")
        return super().get(url, **kwargs)


HF_URL = "https://huggingface.co/org/repo/resolve/main/file.bin"


def test_hf_hub_offline_skips_hugging_face_urls(server, tmp_path, policy, monkeypatch):
    local = server.route("/file.bin", serve_bytes(DATA))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    session = _LocalOnly()

    result = download([HF_URL, "https://cdn.hf.co/x/file.bin", local], tmp_path / "file.bin", sha256=SHA,
                      policy=policy, session=session)
    assert result.url == local and session.asked == [local]

    with pytest.raises(OfflineError) as caught:
        download([HF_URL], tmp_path / "other.bin", sha256=SHA, label="thing", policy=policy, session=session,
                 hint="try --from")
    assert str(caught.value) == ("cannot download thing: it is on the Hugging Face Hub (huggingface.co) and "
                                 "HF_HUB_OFFLINE=1 forbids requests to the Hub; unset HF_HUB_OFFLINE to download it; "
                                 "try --from")
    assert session.asked == [local]

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # huggingface_hub's own reading: not offline
    with pytest.raises(NoNetworkError):
        download([HF_URL], tmp_path / "other.bin", sha256=SHA, policy=policy, session=session)
    assert session.asked == [local, HF_URL]


def test_a_poisoned_part_is_retried_from_zero_before_the_mirror_is_blamed(server, tmp_path, policy):
    url = server.route("/file.bin", serve_bytes(DATA))
    (tmp_path / "file.bin.part").write_bytes(os.urandom(100_000))  # garbage left locally
    notes = []

    download([url], tmp_path / "file.bin", sha256=SHA, size=len(DATA), label="thing", policy=policy,
             notify=notes.append)

    assert (tmp_path / "file.bin").read_bytes() == DATA and _leftovers(tmp_path) == ["file.bin"]
    assert [r.range for r in server.requests_for("/file.bin")] == ["bytes=100000-", None]
    (note,) = notes
    assert note.startswith("thing: the resumed download fails its sha256 check") and "from byte 0" in note


def test_a_bad_mirror_is_still_blamed_after_the_fresh_retry(server, tmp_path, policy):
    url = server.route("/file.bin", serve_bytes(bytes(reversed(DATA))))
    (tmp_path / "file.bin.part").write_bytes(DATA[:100_000])  # a good part: the server is the bad one

    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download([url], tmp_path / "file.bin", sha256=SHA, size=len(DATA), policy=policy, notify=lambda _: None)

    assert [r.range for r in server.requests_for("/file.bin")] == ["bytes=100000-", None]
    assert _leftovers(tmp_path) == []
