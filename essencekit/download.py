"""The download engine: one verified file from a list of mirrors.

* Streams with ``requests`` into ``<final name>.part``, hashing while it streams; the part is
  renamed onto the final name (atomically) only when its sha256 matches. A mismatch deletes
  the part and moves on to the next mirror.
* Resumes an interrupted part with an HTTP ``Range`` request; a server that answers ``200``
  (it ignores ``Range``) restarts the part cleanly.
* Retries with exponential backoff on timeouts, dropped connections, 5xx, 408 and 429; no
  retry on 401/403/404/410 or any other answer that will not change (next mirror at once).
  Each retry, and each move to the next mirror after retries, is announced in one line
  through ``notify`` (stderr by default). A mirror that sends nothing at all until the read timeout gets one
  more try (``RetryPolicy.stall_retries``), not five: a server that accepts and never answers
  would otherwise cost minutes per URL. ``ESSENCEKIT_CONNECT_TIMEOUT`` and
  ``ESSENCEKIT_READ_TIMEOUT`` (seconds) override the policy's timeouts.
* Never writes more than the file can be: the stream is cut, and the part deleted, as soon as
  it passes the registered size (or the announced length; for a file of unknown size and
  length, ``ESSENCEKIT_MAX_DOWNLOAD``, default 20 GB).
* A resumed part whose sha256 fails is retried once from byte 0 before the mirror is blamed:
  the bad bytes may be local (a part left by another tool, a disk error).
* An optional ``check(path)`` looks at the content of a complete, checksum-verified part
  before it is renamed (say, "is this a safetensors file?"); a refusal deletes the part and
  moves on to the next mirror, like a checksum mismatch.
* Any ``text/html`` answer is "not the file", except a Google Drive confirmation form
  (``id="download-form"``, or the older ``confirm=`` link/cookie), which is followed.
* ``ESSENCEKIT_OFFLINE=1`` forbids every request, ``HF_HUB_OFFLINE=1`` every request to the
  Hugging Face Hub (its URLs are skipped); a host that cannot be reached at all is not
  retried, so "no network" is reported at once, in one line.
* URLs are shown and returned only through :func:`essencekit.urls.redact_url` (no password,
  no query values); requests use them as given.
* Ctrl-C leaves only the ``.part`` (for resuming) and re-raises; a full disk removes the part.

:class:`RetryPolicy` (timeouts, attempts, backoff, and the ``sleep`` it uses) is injectable;
:data:`DEFAULT_POLICY` is what the command line uses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import html
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit

import requests

from .cache import DiskFullError, write_error
from .errors import EssencekitError, first_line
from .urls import host_of, redact_in, redact_url

ENV_OFFLINE = "ESSENCEKIT_OFFLINE"
ENV_HF_OFFLINE = "HF_HUB_OFFLINE"  # huggingface_hub's own switch: users set it once for every tool
ENV_CONNECT_TIMEOUT = "ESSENCEKIT_CONNECT_TIMEOUT"
ENV_READ_TIMEOUT = "ESSENCEKIT_READ_TIMEOUT"
ENV_MAX_DOWNLOAD = "ESSENCEKIT_MAX_DOWNLOAD"
# the cap for a file whose size nobody states: 15x the largest artifact (e4e, 1.2 GB)
DEFAULT_MAX_DOWNLOAD = 20_000_000_000
_HF_HOSTS = ("huggingface.co", "hf.co")
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_DRIVE_HOSTS = ("drive.google.com", "drive.usercontent.google.com", "docs.google.com")
_HTML_SNIFF = 512 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one mirror. ``sleep`` is injectable so tests run without waiting.

    ``read_timeout`` is the longest silence tolerated while waiting for an answer or for the
    next bytes. ``stall_retries``: how many more tries a mirror gets after an attempt that
    timed out without a single byte of the file (then the next mirror is tried); timeouts
    after some progress are retried up to ``attempts`` like any transient failure."""

    attempts: int = 5
    backoff: float = 1.0
    factor: float = 2.0
    max_backoff: float = 30.0
    connect_timeout: float = 15.0
    read_timeout: float = 30.0
    chunk_size: int = 1 << 20
    stall_retries: int = 1
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1, 2, ...)."""
        return min(self.max_backoff, self.backoff * self.factor ** (retry - 1))


DEFAULT_POLICY = RetryPolicy()


def _env_seconds(name: str) -> float | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise EssencekitError(
            f"{name}={value!r} is not a number of seconds: set it to a positive number such as 30, or unset it"
        )
    return seconds


def env_policy(policy: RetryPolicy | None = None) -> RetryPolicy:
    """``policy`` (default :data:`DEFAULT_POLICY`) with the timeouts that
    ``ESSENCEKIT_CONNECT_TIMEOUT`` and ``ESSENCEKIT_READ_TIMEOUT`` set; the environment wins,
    since it is how a person tunes a run. An invalid value raises one :class:`EssencekitError`."""
    policy = policy or DEFAULT_POLICY
    connect, read = _env_seconds(ENV_CONNECT_TIMEOUT), _env_seconds(ENV_READ_TIMEOUT)
    changes = {k: v for k, v in (("connect_timeout", connect), ("read_timeout", read)) if v is not None}
    return dataclasses.replace(policy, **changes) if changes else policy


_SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
               "t": 10**12, "tb": 10**12}


def max_download() -> int:
    """The most bytes accepted for a file whose size is neither registered nor announced:
    ``ESSENCEKIT_MAX_DOWNLOAD`` (bytes, or with a unit: ``500MB``, ``40GB``), default 20 GB."""
    value = os.environ.get(ENV_MAX_DOWNLOAD, "").strip()
    if not value:
        return DEFAULT_MAX_DOWNLOAD
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)", value)
    unit = _SIZE_UNITS.get(match.group(2).lower()) if match else None
    if unit is None or float(match.group(1)) * unit < 1:
        raise EssencekitError(
            f"{ENV_MAX_DOWNLOAD}={value!r} is not a size: set it to bytes or a size such as 40GB, or unset it"
        )
    return int(float(match.group(1)) * unit)


def check_environment() -> None:
    """Raise the one-line error for an invalid download setting in the environment, before
    anything is fetched (so a run reports it once, not once per artifact)."""
    env_policy()
    max_download()


class DownloadError(EssencekitError):
    """Every mirror failed; the message lists why, one reason per mirror. ``reasons`` holds
    those reasons (``"host/path: why"``), ``by_host`` the same as ``"host: why"``, and ``hint``
    the advice appended to the message, so a caller can combine failures into one line."""

    def __init__(self, message: str, *, reasons: Sequence[str] = (), hint: str = "",
                 by_host: Sequence[str] = ()):
        super().__init__(message)
        self.reasons = list(reasons)
        self.by_host = list(by_host) or list(reasons)
        self.hint = hint


class NoNetworkError(DownloadError):
    """No mirror's host could be reached at all."""


class OfflineError(EssencekitError):
    """``ESSENCEKIT_OFFLINE`` is set and a download was needed."""


def offline() -> bool:
    """Whether ``ESSENCEKIT_OFFLINE`` forbids network access."""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() not in ("", "0", "false", "no", "off")


def hf_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` forbids requests to the Hugging Face Hub (the values
    huggingface_hub itself takes as true)."""
    return os.environ.get(ENV_HF_OFFLINE, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def on_hf_hub(url: str) -> bool:
    """Whether ``url`` is on the Hugging Face Hub (``huggingface.co``, ``hf.co`` and their
    subdomains)."""
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return False
    return any(host == h or host.endswith("." + h) for h in _HF_HOSTS)


class Progress:
    """What the engine reports while it works; the default does nothing. The command line
    plugs a Rich progress bar in here."""

    def start(self, label: str, total: int | None, completed: int = 0) -> None:
        """A transfer (or a restart of one) begins; ``completed`` bytes are already there."""

    def update(self, completed: int) -> None:
        """``completed`` bytes are in the part file."""

    def finish(self) -> None:
        """The transfer ended (successfully or not)."""


@dataclass
class DownloadResult:
    """``url`` is the mirror that served the file, redacted (:func:`essencekit.urls.redact_url`):
    safe to show and to store."""

    path: Path
    sha256: str
    size: int
    url: str


def user_agent() -> str:
    from .version import __version__

    return f"essencekit/{__version__} (weights downloader; python-requests {requests.__version__})"


# --------------------------------------------------------------------------- internals


class _MirrorFailed(Exception):
    """This mirror will not give us the file; try the next one."""

    def __init__(self, reason: str, *, unreachable: bool = False, retried: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.unreachable = unreachable
        self.retried = retried  # time was spent on it: say so before moving on


class _Retry(Exception):
    """A transient failure: wait and try the same mirror again (resuming the part).
    ``stalled``: the attempt timed out without receiving a single byte of the file."""

    def __init__(self, reason: str, *, wait: float | None = None, stalled: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.wait = wait
        self.stalled = stalled


class _Restart(Exception):
    """The part cannot be resumed: delete it and ask again from byte 0, now."""


def _short(url: str) -> str:
    parts = urlsplit(redact_url(url))
    path = parts.path if len(parts.path) <= 60 else parts.path[:28] + "..." + parts.path[-28:]
    return f"{host_of(url)}{path}"


def _is_unreachable(error: requests.exceptions.ConnectionError) -> str | None:
    """A reason when the host cannot be reached at all (DNS, refused, no route)."""
    import urllib3.exceptions as u3

    seen = set()
    stack = [error]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, getattr(u3, "NameResolutionError", ())) or "Name or service not known" in str(item) \
                or "nodename nor servname" in str(item) or "getaddrinfo failed" in str(item) \
                or "Temporary failure in name resolution" in str(item):
            return "cannot resolve the host name"
        if isinstance(item, ConnectionRefusedError) or "Connection refused" in str(item):
            return "connection refused"
        if isinstance(item, OSError) and item.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return "network unreachable"
        if isinstance(item, u3.NewConnectionError):
            return "cannot connect"
        stack.extend([getattr(item, "reason", None), item.__cause__, item.__context__, *[
            a for a in getattr(item, "args", ()) if isinstance(a, BaseException)]])
    return None


class _DriveForm(HTMLParser):
    """Finds Google Drive's "virus scan warning" form and its hidden inputs."""

    def __init__(self):
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._inside = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and attrs.get("id") == "download-form":
            self.action = attrs.get("action") or ""
            self._inside = True
        elif tag == "input" and self._inside and attrs.get("name"):
            if (attrs.get("type") or "").lower() in ("hidden", ""):
                self.fields[attrs["name"]] = attrs.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self._inside = False


def drive_confirmation_url(page: str, page_url: str, cookies: dict[str, str] | None = None) -> str | None:
    """The URL that Google Drive's confirmation page asks for, or ``None`` if ``page`` is not one.

    Since 2024 Drive answers a large file with a form (``id="download-form"``, action
    ``drive.usercontent.google.com/download``, hidden inputs ``id``, ``export``, ``confirm``,
    ``uuid``); before that, with a ``confirm=`` link and a ``download_warning`` cookie.
    """
    parser = _DriveForm()
    with contextlib.suppress(Exception):
        parser.feed(page)
    if parser.action is not None:
        action = urljoin(page_url, html.unescape(parser.action))
        query = urlencode(parser.fields)
        return f"{action}{'&' if '?' in action else '?'}{query}" if query else action
    match = re.search(r'href="(/uc\?export=download[^"]*?confirm=[^"]+)"', page)
    if match:
        return urljoin(page_url, html.unescape(match.group(1)))
    for name, value in (cookies or {}).items():
        if name.startswith("download_warning"):
            return f"{page_url}{'&' if '?' in page_url else '?'}confirm={value}"
    return None


def _html_reason(page: str, url: str) -> str:
    lowered = page.lower()
    host = urlsplit(url).netloc
    if any(host.endswith(h) for h in _DRIVE_HOSTS) or "google drive" in lowered:
        if "quota" in lowered or "too many users" in lowered:
            return "Google Drive refused: the file's download quota is exceeded (try later or another mirror)"
        if "sign in" in lowered or "accounts.google.com" in lowered:
            return "Google Drive asked for a sign-in (the file is not public)"
        return "Google Drive answered with a web page, not the file"
    return "served a web page (text/html), not the file"


def _part_size(part: Path) -> int:
    try:
        return part.stat().st_size
    except FileNotFoundError:
        return 0


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _fsync_dir(directory: Path) -> None:
    if os.name == "nt":  # pragma: no cover
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _finalize(part: Path, dest: Path) -> None:
    try:
        os.replace(part, dest)
    except OSError as error:
        raise write_error(error, dest) from None
    _fsync_dir(dest.parent)


class _Downloader:
    def __init__(self, dest: Path, sha256: str | None, size: int | None, label: str,
                 progress: Progress, policy: RetryPolicy, session: requests.Session,
                 check: Callable[[Path], None] | None = None, notify: Callable[[str], None] | None = None,
                 cap: int = DEFAULT_MAX_DOWNLOAD):
        self.check = check
        self.notify = notify or _stderr
        self.cap = cap
        self.dest = dest
        self.part = dest.with_name(dest.name + ".part")
        self.sha256 = sha256
        self.size = size
        self.label = label
        self.progress = progress
        self.policy = policy
        self.session = session

    # one mirror, with retries --------------------------------------------------------
    def mirror(self, url: str) -> DownloadResult:
        retries = 0
        restarts = 0
        stalls = 0
        while True:
            try:
                return self.attempt(url)
            except _Restart:
                _remove(self.part)
                restarts += 1
                if restarts > 2:
                    raise _MirrorFailed("cannot resume or restart the transfer") from None
            except _Retry as retry:
                retries += 1
                stalls = stalls + 1 if retry.stalled else 0
                if retries >= self.policy.attempts:
                    raise _MirrorFailed(f"{retry.reason} (gave up after {retries} tries)", retried=True) from None
                if retry.stalled and stalls > self.policy.stall_retries:
                    # silent twice in a row: a dead server, not a slow one; other mirrors may answer
                    raise _MirrorFailed(f"{retry.reason} (gave up after {stalls} silent tries)", retried=True) from None
                delay = self.policy.delay(retries)
                if retry.wait is not None:
                    delay = min(self.policy.max_backoff, max(delay, retry.wait))
                total = self.policy.attempts
                if retry.stalled:
                    # a silent mirror is left after stall_retries more tries, not after `attempts`
                    total = min(total, retries - stalls + self.policy.stall_retries + 1)
                self.notify(
                    f"{self.label}: {_short(url)} {retry.reason}; retrying in {delay:g} s "
                    f"(attempt {retries + 1}/{total})"
                )
                self.policy.sleep(delay)

    # one request -----------------------------------------------------------------------
    def _get(self, url: str, headers: dict) -> requests.Response:
        try:
            return self.session.get(
                url, headers=headers, stream=True, allow_redirects=True,
                timeout=(self.policy.connect_timeout, self.policy.read_timeout),
            )
        except requests.exceptions.ConnectTimeout:
            raise _Retry(f"timed out: no connection within {self.policy.connect_timeout:g} s", stalled=True) from None
        except requests.exceptions.Timeout:
            raise _Retry(f"timed out: no answer within {self.policy.read_timeout:g} s", stalled=True) from None
        except requests.exceptions.SSLError as error:
            raise _MirrorFailed(f"TLS error ({_redacted_first_line(error, url)})") from None
        except requests.exceptions.ConnectionError as error:
            unreachable = _is_unreachable(error)
            if unreachable:
                raise _MirrorFailed(unreachable, unreachable=True) from None
            raise _Retry("connection reset") from None
        except requests.exceptions.InvalidURL as error:
            raise _MirrorFailed(f"invalid URL ({_redacted_first_line(error, url)})") from None
        except requests.exceptions.RequestException as error:
            raise _MirrorFailed(_redacted_first_line(error, url)) from None

    def attempt(self, url: str) -> DownloadResult:
        existing = _part_size(self.part)
        if self.size is not None and existing > self.size:
            _remove(self.part)
            existing = 0
        if self.size is not None and existing == self.size and existing > 0:
            # a complete part left by an interrupted run: check it without the network
            digest = _hash_file(self.part)
            if self.sha256 is None or digest == self.sha256:
                self._check_content()
                _finalize(self.part, self.dest)
                return DownloadResult(self.dest, digest, existing, redact_url(url))
            _remove(self.part)
            existing = 0

        headers = {"User-Agent": user_agent(), "Accept-Encoding": "identity"}
        if existing:
            headers["Range"] = f"bytes={existing}-"
        current = url
        for _hop in range(4):
            response = self._get(current, headers)
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if response.status_code in (200, 206) and content_type in ("text/html", "application/xhtml+xml"):
                try:
                    page = response.raw.read(_HTML_SNIFF, decode_content=True).decode("utf-8", "replace")
                except Exception:  # noqa: BLE001 - an unreadable page is still not the file
                    page = ""
                finally:
                    response.close()
                follow = drive_confirmation_url(page, response.url, dict(self.session.cookies))
                if follow and follow != current:
                    current = follow
                    continue
                raise _MirrorFailed(_html_reason(page, response.url))
            break
        else:
            raise _MirrorFailed("too many confirmation pages")
        with contextlib.closing(response):
            return self._stream(response, url, existing)

    def _stream(self, response: requests.Response, url: str, existing: int) -> DownloadResult:
        status = response.status_code
        if status == 416 and existing:
            raise _Restart()
        if status in _RETRY_STATUS or 500 <= status < 600:
            wait = None
            retry_after = response.headers.get("Retry-After", "")
            if retry_after.isdigit():
                wait = float(retry_after)
            raise _Retry(f"HTTP {status} {response.reason or ''}".strip(), wait=wait)
        if status not in (200, 206):
            raise _MirrorFailed(f"HTTP {status} {response.reason or ''}".strip())

        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if not existing or not match or int(match.group(1)) != existing:
                raise _Restart()  # a range we did not ask for: start over cleanly
            total = int(match.group(3)) if match.group(3) != "*" else (
                existing + length if length is not None else None)
        else:
            existing = 0  # 200: the server sends the whole file (it ignored Range): restart
            total = length
        if self.size is not None and total is not None and total != self.size:
            raise _MirrorFailed(f"serves {total:,} bytes, expected {self.size:,}: not the same file")
        if self.size is None and total is not None and total > self.cap:
            raise _MirrorFailed(f"announces {_mb(total)}, more than the {_mb(self.cap)} allowed for a file of "
                                f"unknown size (raise {ENV_MAX_DOWNLOAD} if it is right)")

        expected_total = total if total is not None else self.size
        # the stream is cut here: a server that sends no length could otherwise fill the disk
        limit = expected_total if expected_total is not None else self.cap
        if expected_total is not None:
            try:
                free = shutil.disk_usage(self.part.parent).free
            except OSError:
                free = None
            if free is not None and expected_total - existing > free:
                raise DiskFullError(
                    f"not enough disk space for {self.label} in {self.part.parent}: it needs "
                    f"{_mb(expected_total - existing)}, {_mb(free)} free; free some space, or put the cache "
                    f"on another disk with ESSENCEKIT_HOME or --cache-dir"
                )

        hasher = hashlib.sha256()
        if existing:
            with open(self.part, "rb") as handle:
                while chunk := handle.read(4 << 20):
                    hasher.update(chunk)
        received = existing
        self.progress.start(self.label, expected_total, existing)
        try:
            try:
                handle = open(self.part, "ab" if existing else "wb")
            except OSError as error:
                raise write_error(error, self.part) from None
            with handle:
                try:
                    for chunk in response.iter_content(chunk_size=self.policy.chunk_size):
                        if not chunk:
                            continue
                        if received + len(chunk) > limit:
                            raise _TooLong(received + len(chunk))
                        try:
                            handle.write(chunk)
                        except OSError as error:
                            raise _WriteFailed(error) from None
                        hasher.update(chunk)
                        received += len(chunk)
                        self.progress.update(received)
                    handle.flush()
                    os.fsync(handle.fileno())
                except _WriteFailed as failed:
                    raise failed.error from None
                except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                        requests.exceptions.Timeout, ConnectionError) as error:
                    if "timed out" not in str(error).lower():
                        raise _Retry(f"connection dropped after {received:,} bytes") from None
                    if received == existing:  # the headers came, then silence
                        raise _Retry(f"timed out: sent nothing for {self.policy.read_timeout:g} s",
                                     stalled=True) from None
                    raise _Retry(f"timed out: sent nothing for {self.policy.read_timeout:g} s after "
                                 f"{received:,} bytes") from None
        except _TooLong as too_long:
            _remove(self.part)
            if self.size is not None or total is not None:
                what = f"{self.size or total:,} bytes expected"
            else:
                what = (f"the {_mb(self.cap)} allowed for a file of unknown size; raise {ENV_MAX_DOWNLOAD} "
                        "if it is right")
            raise _MirrorFailed(f"sent more than the file can be ({too_long.received:,} bytes, {what}); "
                                "stopped and deleted") from None
        except OSError as error:
            # a full disk or a vanished folder while writing: never leave a half file behind
            handle_error = write_error(error, self.part)
            if isinstance(handle_error, DiskFullError):
                _remove(self.part)
            raise handle_error from None
        finally:
            self.progress.finish()

        if total is not None and received < total:
            raise _Retry(f"connection closed after {received:,} of {total:,} bytes")
        if (total is not None and received > total) or (self.size is not None and received != self.size):
            _remove(self.part)
            raise _MirrorFailed(f"sent {received:,} bytes, expected {self.size or total:,}")
        digest = hasher.hexdigest()
        if self.sha256 is not None and digest != self.sha256 and existing:
            # the bytes kept from an earlier run may be the bad ones (another tool, a disk
            # error): only a whole fresh copy can blame the mirror
            self.notify(f"{self.label}: the resumed download fails its sha256 check; the kept part may be "
                        f"damaged, so it is deleted and {_short(url)} is asked again from byte 0")
            raise _Restart()
        if self.sha256 is not None and digest != self.sha256:
            _remove(self.part)
            raise _MirrorFailed(
                f"sha256 mismatch: the file it served hashes to {digest[:16]}..., expected "
                f"{self.sha256[:16]}... (a wrong or corrupt file; deleted)"
            )
        self._check_content()
        _finalize(self.part, self.dest)
        return DownloadResult(self.dest, digest, received, redact_url(url))

    def _check_content(self) -> None:
        if self.check is None:
            return
        try:
            self.check(self.part)
        except EssencekitError as error:
            _remove(self.part)
            raise _MirrorFailed(f"served a file that is {error} (deleted)") from None


class _TooLong(Exception):
    def __init__(self, received: int):
        super().__init__(received)
        self.received = received


class _WriteFailed(Exception):
    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


def _redacted_first_line(error: BaseException, url: str) -> str:
    # libraries quote the URL they were given, secrets included: redacted before the line is
    # cut, so that no cut leaves part of a secret unrecognised
    return redact_in(first_line(error, limit=None), url)[:200]


def _stderr(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _hash_file(path: Path) -> str:
    from .cache import sha256_file

    return sha256_file(path)


# --------------------------------------------------------------------------- public entry


def download(
    urls: Sequence[str],
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    size: int | None = None,
    label: str | None = None,
    progress: Progress | None = None,
    policy: RetryPolicy | None = None,
    session: requests.Session | None = None,
    hint: str = "",
    check: Callable[[Path], None] | None = None,
    notify: Callable[[str], None] | None = None,
) -> DownloadResult:
    """Fetch ``dest`` from the first of ``urls`` that serves the right bytes.

    ``sha256`` (hex) and ``size`` (bytes) are checked when given; with ``sha256=None`` any
    complete non-HTML answer is accepted and its digest returned (the caller pins it).
    ``check(part)``, when given, vets the content of a complete, verified part before it is
    renamed; an :class:`EssencekitError` from it counts as "this mirror served the wrong file".
    ``dest`` appears only once verified; ``dest + ".part"`` holds an unfinished transfer and is
    resumed next time. ``notify(line)`` (default: stderr) is told of each retry, and of each
    move to the next mirror after retries. The policy's timeouts give way to
    ``ESSENCEKIT_CONNECT_TIMEOUT`` and ``ESSENCEKIT_READ_TIMEOUT``. Hugging Face Hub URLs are
    skipped while ``HF_HUB_OFFLINE`` is set. Raises :class:`OfflineError` when
    ``ESSENCEKIT_OFFLINE`` is set (or ``HF_HUB_OFFLINE`` and every URL is on the Hub),
    :class:`NoNetworkError` when no host answered, :class:`DownloadError` when every mirror
    failed (one reason per mirror; ``hint`` is appended), and the cache's one-line errors for a
    full disk or an unwritable folder. ``KeyboardInterrupt`` propagates, leaving the part.
    """
    dest = Path(dest)
    label = label or dest.name
    if offline():
        raise OfflineError(
            f"cannot download {label}: network access is disabled ({ENV_OFFLINE}=1){'; ' + hint if hint else ''}"
        )
    skipped_hf = []
    if urls and hf_offline():
        skipped_hf = [u for u in urls if on_hf_hub(u)]
        urls = [u for u in urls if not on_hf_hub(u)]
        if not urls:
            hosts = ", ".join(dict.fromkeys(host_of(u) for u in skipped_hf))
            raise OfflineError(
                f"cannot download {label}: it is on the Hugging Face Hub ({hosts}) and {ENV_HF_OFFLINE}=1 forbids "
                f"requests to the Hub; unset {ENV_HF_OFFLINE} to download it{'; ' + hint if hint else ''}"
            )
    if not urls:
        raise DownloadError(f"cannot download {label}: no URL is known for it{'; ' + hint if hint else ''}",
                            reasons=["no URL is known for it"], hint=hint)
    policy = env_policy(policy)
    cap = max_download()
    notify = notify or _stderr
    from .cache import ensure_dir

    ensure_dir(dest.parent)
    own_session = session is None
    session = session or requests.Session()
    engine = _Downloader(dest, sha256, size, label, progress or Progress(), policy, session, check, notify, cap)
    failures: list[str] = []
    by_host: list[str] = []
    unreachable: list[tuple[str, str]] = []
    try:
        for index, url in enumerate(urls):
            try:
                return engine.mirror(url)
            except _MirrorFailed as failed:
                failures.append(f"{_short(url)}: {failed.reason}")
                by_host.append(f"{host_of(url)}: {failed.reason}")
                if failed.unreachable:
                    unreachable.append((host_of(url), failed.reason))
                elif failed.retried and index + 1 < len(urls):
                    notify(f"{label}: {_short(url)} failed ({failed.reason}); trying the next mirror, "
                           f"{_short(urls[index + 1])}")
    finally:
        if own_session:
            session.close()
    skip_note = ""
    if skipped_hf:
        skip_note = f"skipped {', '.join(dict.fromkeys(host_of(u) for u in skipped_hf))} ({ENV_HF_OFFLINE}=1)"
        failures.append(skip_note)
        by_host.append(skip_note)
    suffix = (f"; {skip_note}" if skip_note else "") + (f"; {hint}" if hint else "")
    if len(unreachable) == len(urls):
        hosts = ", ".join(dict.fromkeys(host for host, _ in unreachable))
        reason = unreachable[0][1]
        raise NoNetworkError(
            f"no network: cannot reach {hosts} ({reason}) to download {label}; check the connection "
            f"or proxy settings{suffix}",
            reasons=[f"cannot reach {hosts} ({reason})"], hint=hint,
        )
    suffix = f"; {hint}" if hint else ""
    raise DownloadError(f"could not download {label}: " + "; ".join(failures) + suffix, reasons=failures, hint=hint,
                        by_host=by_host)
