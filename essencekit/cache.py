"""Where weights live on disk, and :func:`resolve_artifact`, which every loader calls.

Layout (the root is ``$ESSENCEKIT_HOME``, else the platform's user cache folder)::

    <root>/licenses.json              licenses accepted with pull-weights
    <root>/weights/<name>/            one folder per artifact
        <file name>                   the file as published (only once its sha256 holds)
        <file name>.part              an unfinished download, kept for resuming
        <ready file>                  what loaders read: the published file, or its
                                      conversion (<name>.safetensors, <name>.pt, <stem>.safe.pt)
        record.json                   what was verified: sha256, size and mtime of the ready file
        pin.json                      trust-on-first-use pin of an artifact with no published sha256
        .lock                         held (flock) while pull-weights works on the artifact

An artifact may name a ``fallback``: another artifact with the same weights in another form.
While the artifact itself is missing, :func:`resolve_artifact` returns the fallback's verified
file instead (one level: a fallback's own fallback is not followed).

A file appears under its final name only after its checksum holds (an atomic rename), so a
crash, a full disk or Ctrl-C never leaves a corrupt file where loaders look. A verified file
is remembered by its size and modification time, so a 1 GB checkpoint is hashed once, not on
every run.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import difflib
import errno
import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from .atomic import atomic_path
from .errors import EssencekitError
from .urls import redact_url
from .weights import WeightArtifact

ENV_HOME = "ESSENCEKIT_HOME"
RECORD_FILE = "record.json"
PIN_FILE = "pin.json"
LOCK_FILE = ".lock"
LICENSES_FILE = "licenses.json"
PART_SUFFIX = ".part"
_RECORD_VERSION = 1
_HASH_CHUNK = 4 << 20

_root_override: contextvars.ContextVar[Path | None] = contextvars.ContextVar("essencekit_cache_root", default=None)


# --------------------------------------------------------------------------- locations


def cache_root() -> Path:
    """The cache root: ``--cache-dir`` for the current run, else ``$ESSENCEKIT_HOME``, else
    platformdirs' ``user_cache_dir("essencekit")``."""
    override = _root_override.get()
    if override is not None:
        return override
    env = os.environ.get(ENV_HOME, "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("essencekit", appauthor=False))


@contextlib.contextmanager
def using_cache_root(path: str | os.PathLike | None) -> Iterator[Path]:
    """Use ``path`` as the cache root inside the ``with`` block (``None``: no change)."""
    if path is None:
        yield cache_root()
        return
    token = _root_override.set(Path(path).expanduser().absolute())
    try:
        yield cache_root()
    finally:
        _root_override.reset(token)


def weights_dir() -> Path:
    return cache_root() / "weights"


def artifact_dir(artifact: WeightArtifact | str) -> Path:
    name = artifact if isinstance(artifact, str) else artifact.name
    return weights_dir() / name


def raw_path(artifact: WeightArtifact) -> Path:
    """Where the file as published lives once verified."""
    return artifact_dir(artifact) / artifact.filename


_CONVERTED_SUFFIX = {"clip-torchscript": ".safetensors", "essence-npy": ".pt"}


def converted_path(artifact: WeightArtifact) -> Path | None:
    """Where the conversion of ``artifact`` goes (``None`` when it has none)."""
    if artifact.convert is None or artifact.convert == "open-clip-safetensors":  # used as published
        return None
    if artifact.convert == "safe-checkpoint":
        stem = artifact.filename.rsplit(".", 1)[0]
        name = f"{stem}.safe.pt"
    else:
        name = artifact.name + _CONVERTED_SUFFIX[artifact.convert]
    if name == artifact.filename:
        name = "converted-" + name
    return artifact_dir(artifact) / name


def ensure_dir(path: Path) -> Path:
    """``mkdir -p`` with a one-line error for the usual reasons it fails."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_error(error, path) from None
    return path


def write_error(error: OSError, path: Path | str) -> EssencekitError:
    """A one-line :class:`EssencekitError` for an ``OSError`` met while writing under ``path``."""
    where = getattr(error, "filename", None) or path
    if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return DiskFullError(
            f"disk full while writing {where}: free some space, or put the cache on another disk "
            f"with ESSENCEKIT_HOME or --cache-dir"
        )
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS) or isinstance(error, PermissionError):
        reason = "read-only file system" if error.errno == errno.EROFS else "permission denied"
        return CachePermissionError(
            f"cannot write {where}: {reason}; choose a writable cache folder with ESSENCEKIT_HOME or --cache-dir"
        )
    if error.errno == errno.ENOTDIR or isinstance(error, (FileExistsError, NotADirectoryError)):
        return EssencekitError(f"cannot create the cache folder {path}: a file is in the way ({where})")
    return EssencekitError(f"cannot write {where}: {error.strerror or error}")


class DiskFullError(EssencekitError):
    """The disk filled up; nothing was left under a final name."""


class CachePermissionError(EssencekitError):
    """The cache folder cannot be written."""


# --------------------------------------------------------------------------- registry lookups


def get_artifact(name: str) -> WeightArtifact:
    """The registered artifact ``name``, or a one-line error that suggests close names."""
    from .plugins import registered

    artifacts = registered("weights")
    if name in artifacts:
        return artifacts[name]
    close = difflib.get_close_matches(name, list(artifacts), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise EssencekitError(
        f"unknown weight artifact {name!r}{hint}; `essencekit pull-weights --list` shows them all"
    )


def fallback_artifact(artifact: WeightArtifact) -> WeightArtifact | None:
    """The registered artifact ``artifact.fallback`` names (``None`` when it names none).

    Raises a one-line :class:`EssencekitError` when no artifact of that name is registered or
    it is of another kind: plugins register in any order, so this is checked when the fallback
    is needed, not when the artifact is created."""
    if artifact.fallback is None:
        return None
    from .plugins import owner_of, registered

    artifacts = registered("weights")
    alt = artifacts.get(artifact.fallback)
    owner = owner_of("weights", artifact.name) or "its plugin"
    if alt is None:
        raise EssencekitError(
            f"{artifact.name} names {artifact.fallback!r} as its fallback, but no weight artifact of that name "
            f"is registered (a mistake in {owner}); `essencekit pull-weights --list` shows them all"
        )
    if alt.kind != artifact.kind:
        raise EssencekitError(
            f"{artifact.name} names {alt.name} as its fallback, but {alt.name} is a {alt.kind}, not a "
            f"{artifact.kind} (a mistake in {owner})"
        )
    return alt


# --------------------------------------------------------------------------- hashing


def sha256_file(path: str | os.PathLike, *, on_bytes: Callable[[int], None] | None = None) -> str:
    """The lower-case hex sha256 of a file, read in chunks; ``on_bytes(n)`` after each chunk."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(_HASH_CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    return digest.hexdigest()


# --------------------------------------------------------------------------- small JSON files


def _read_json(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # unreadable bookkeeping is treated as absent: the file gets re-verified
    return data if isinstance(data, dict) else None


def write_json_atomic(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    ensure_dir(path.parent)
    try:
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
    except OSError as error:
        raise write_error(error, path) from None


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- records and pins


@dataclass
class CacheRecord:
    """What ``pull-weights`` verified and placed for one artifact (``record.json``)."""

    name: str
    ready: str  # file name, inside the artifact's folder, of what loaders read
    ready_sha256: str
    ready_size: int
    ready_mtime_ns: int
    source_sha256: str  # sha256 of the file as published
    source_size: int
    source: str  # the URL (redacted: no password, no query values) or local file it came from
    pinned: str  # "registry" (published checksum) or "first-use" (trust on first use)
    convert: str | None = None
    fetched_at: str = ""
    version: int = _RECORD_VERSION

    @property
    def path(self) -> Path:
        return artifact_dir(self.name) / self.ready


def read_record(artifact: WeightArtifact | str) -> CacheRecord | None:
    data = _read_json(artifact_dir(artifact) / RECORD_FILE)
    if not data or data.get("version") != _RECORD_VERSION:
        return None
    try:
        record = CacheRecord(**{k: data[k] for k in CacheRecord.__dataclass_fields__ if k in data})
    except TypeError:
        return None
    if isinstance(record.source, str):  # a record written before URLs were redacted
        record.source = _redact_source(record.source)
    if not isinstance(record.ready, str) or not record.ready or "/" in record.ready or "\\" in record.ready \
            or record.ready.startswith("."):
        return None  # a record must name a file inside the artifact's own folder
    return record


def _redact_source(source: str) -> str:
    return redact_url(source) if "://" in source else source


def write_record(record: CacheRecord) -> None:
    if not record.fetched_at:
        record.fetched_at = _now()
    record.source = _redact_source(record.source)
    write_json_atomic(artifact_dir(record.name) / RECORD_FILE, asdict(record))


def forget_record(artifact: WeightArtifact | str) -> None:
    with contextlib.suppress(FileNotFoundError):
        (artifact_dir(artifact) / RECORD_FILE).unlink()


def read_pin(artifact: WeightArtifact | str) -> dict | None:
    """The trust-on-first-use pin of an unpinned artifact: ``{"sha256", "size", "source", "pinned_at"}``."""
    data = _read_json(artifact_dir(artifact) / PIN_FILE)
    if data and isinstance(data.get("sha256"), str) and len(data["sha256"]) == 64:
        return data
    return None


def write_pin(artifact: WeightArtifact, sha256: str, size: int, source: str) -> None:
    write_json_atomic(
        artifact_dir(artifact) / PIN_FILE,
        {"name": artifact.name, "sha256": sha256, "size": size, "source": _redact_source(source), "pinned_at": _now()},
    )


def expected_sha256(artifact: WeightArtifact) -> tuple[str | None, str | None]:
    """``(sha256, how)``: the published checksum (``"registry"``), the first-use pin
    (``"first-use"``), or ``(None, None)`` for an unpinned artifact never downloaded."""
    if artifact.sha256:
        return artifact.sha256, "registry"
    pin = read_pin(artifact)
    if pin:
        return pin["sha256"], "first-use"
    return None, None


# --------------------------------------------------------------------------- verification


@dataclass
class ArtifactState:
    """Where one artifact stands in the cache.

    ``state`` is ``verified`` (the ready file matches its record), ``unverified`` (present but
    changed since it was verified: it needs a re-hash), ``missing``, ``corrupt`` (its sha256 no
    longer matches) or ``outdated`` (the registry now pins another file or conversion).
    """

    name: str
    state: str
    path: Path | None
    message: str = ""
    record: CacheRecord | None = None
    via: str | None = None  # set by usable_state: the fallback whose file stands in for this artifact

    @property
    def ok(self) -> bool:
        return self.state == "verified"


def _record_outdated(artifact: WeightArtifact, record: CacheRecord) -> str:
    if artifact.sha256 and record.source_sha256 != artifact.sha256:
        return "the registry now publishes a different sha256 for it"
    if record.convert != artifact.convert:
        return "the registry now asks for a different conversion"
    return ""


def artifact_state(artifact: WeightArtifact, *, rehash: bool = False, progress=None) -> ArtifactState:
    """Check ``artifact`` in the cache (the artifact itself; :func:`usable_state` also looks at
    its fallback). Without ``rehash`` a file whose size and mtime match its record counts as
    verified without reading it; a changed file is re-hashed (and its record refreshed when it
    still matches). ``rehash=True`` always reads the file. ``progress`` (an
    :class:`essencekit.download.Progress`) is told how a re-hash advances."""
    record = read_record(artifact)
    if record is None:
        raw = raw_path(artifact)
        if raw.exists():
            return ArtifactState(artifact.name, "unverified", raw, "present but never verified")
        return ArtifactState(artifact.name, "missing", None, "not downloaded")
    path = record.path
    try:
        stat = path.stat()
    except FileNotFoundError:
        return ArtifactState(artifact.name, "missing", None, f"{path} was removed", record)
    except OSError as error:
        return ArtifactState(artifact.name, "corrupt", path, f"cannot read {path}: {error.strerror}", record)
    outdated = _record_outdated(artifact, record)
    if outdated:
        return ArtifactState(artifact.name, "outdated", path, outdated, record)
    if not rehash and stat.st_size == record.ready_size and stat.st_mtime_ns == record.ready_mtime_ns:
        return ArtifactState(artifact.name, "verified", path, "", record)
    if stat.st_size != record.ready_size:
        return ArtifactState(
            artifact.name, "corrupt", path, f"{stat.st_size} bytes, expected {record.ready_size}", record
        )
    try:
        digest = _hash_with_progress(path, stat.st_size, f"{artifact.name} (sha256)", progress)
    except OSError as error:
        return ArtifactState(artifact.name, "corrupt", path, f"cannot read {path}: {error.strerror}", record)
    if digest != record.ready_sha256:
        return ArtifactState(
            artifact.name, "corrupt", path,
            f"sha256 {digest[:12]}... does not match the verified {record.ready_sha256[:12]}...", record,
        )
    if stat.st_mtime_ns != record.ready_mtime_ns:
        record.ready_mtime_ns = stat.st_mtime_ns
        with contextlib.suppress(EssencekitError):  # a read-only cache still resolves
            write_record(record)
    return ArtifactState(artifact.name, "verified", path, "", record)


def _hash_with_progress(path: Path, size: int, label: str, progress) -> str:
    if progress is None:
        return sha256_file(path)
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        progress.update(done)

    progress.start(label, size, 0)
    try:
        return sha256_file(path, on_bytes=advance)
    finally:
        progress.finish()


def usable_state(artifact: WeightArtifact) -> ArtifactState:
    """Like :func:`artifact_state`, but while ``artifact`` is missing and its fallback is
    verified, the fallback's state, with ``via`` naming the fallback (``path`` is then the
    fallback's file: what :func:`resolve_artifact` returns). Raises for an unknown fallback
    only when it is needed."""
    state = artifact_state(artifact)
    if state.state != "missing" or artifact.fallback is None:
        return state
    alt = fallback_artifact(artifact)
    alt_state = artifact_state(alt)
    if alt_state.state != "verified":
        return state
    return ArtifactState(
        artifact.name, "verified", alt_state.path, f"provided by its fallback {alt.name}", alt_state.record,
        via=alt.name,
    )


def pull_command(artifact: WeightArtifact, *, repair: bool = False) -> str:
    """The exact command that provides ``artifact``, for error messages."""
    return f"`essencekit pull-weights {artifact.name}{' --repair' if repair else ''}`"


def missing_message(artifact: WeightArtifact) -> str:
    alt = fallback_artifact(artifact)
    if alt is None:
        return (
            f"{artifact.name} ({artifact.description.rstrip('.')}) is not in the weight cache {artifact_dir(artifact)}: "
            f"run {pull_command(artifact)}; without internet, copy {artifact.filename} into a folder "
            f"and run `essencekit pull-weights {artifact.name} --from FOLDER`"
        )
    return (
        f"{artifact.name} ({artifact.description.rstrip('.')}) is not in the weight cache {artifact_dir(artifact)}, "
        f"nor is its fallback {alt.name}: run {pull_command(artifact)} (it pulls {alt.name} when "
        f"{artifact.name}'s mirrors fail) or {pull_command(alt)}; without internet, copy {artifact.filename} "
        f"or {alt.filename} into a folder and run `essencekit pull-weights {artifact.name} --from FOLDER`"
    )


def resolve_artifact(name: str) -> Path:
    """The ready-to-load file of artifact ``name``: the verified download, or its conversion
    (CLIP: the ``.safetensors``; essences: the essence ``.pt``).

    Verified once and then remembered by size and mtime. While the artifact is missing and it
    names a ``fallback`` (the same weights in another form) that is verified, the fallback's
    file is returned. Raises :class:`EssencekitError` naming the ``essencekit pull-weights``
    command (or ``--from``) that provides it when it is missing, corrupt or outdated.
    """
    artifact = get_artifact(name)
    state = usable_state(artifact)
    if state.state == "verified":
        return state.path
    if state.state == "missing":
        alt = fallback_artifact(artifact)
        alt_state = artifact_state(alt) if alt is not None else None
        if alt_state is not None and alt_state.state != "missing":
            # the fallback is there but not usable: its own fix is the one to give
            raise EssencekitError(f"{artifact.name} is not in the weight cache, and " + _state_error(alt, alt_state))
        raise EssencekitError(missing_message(artifact))
    raise EssencekitError(_state_error(artifact, state))


def _state_error(artifact: WeightArtifact, state: ArtifactState) -> str:
    """The one-line error for a present but unusable (unverified, corrupt, outdated) artifact."""
    if state.state == "unverified":
        return (
            f"{state.path} was not placed by pull-weights and is unverified: run {pull_command(artifact)} "
            f"to verify it (or `essencekit pull-weights {artifact.name} --from FOLDER`)"
        )
    return (
        f"{artifact.name} in the cache ({state.path}) is {state.state}: {state.message}; "
        f"run {pull_command(artifact, repair=True)}"
    )


# --------------------------------------------------------------------------- locks


class LockTimeout(EssencekitError):
    """Another process held an artifact's lock for longer than we were willing to wait."""


def _lock_info() -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": _now()})


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 4096).decode("utf-8") or "{}")
        return f"pid {data.get('pid', '?')} on {data.get('host', '?')} since {data.get('since', '?')}"
    except (OSError, ValueError):
        return "another process"


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


@contextlib.contextmanager
def artifact_lock(
    artifact: WeightArtifact | str,
    *,
    timeout: float | None = None,
    poll: float = 0.2,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold the artifact's lock (``<artifact dir>/.lock``) inside the ``with`` block.

    An OS lock (``flock``; ``msvcrt.locking`` on Windows) that the kernel releases when its
    holder dies, so a lock left by a killed process never blocks: the file may remain, the
    lock does not. ``on_wait(holder)`` is called once when another process holds it; after
    ``timeout`` seconds (``None``: as long as the holder lives) :class:`LockTimeout` is raised.
    Where the file system offers no locks (some network mounts) it proceeds unlocked: files
    still only reach their final names after verification, so the worst case is a wasted download.
    """
    directory = ensure_dir(artifact_dir(artifact))
    path = directory / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise write_error(error, path) from None
    locked = False
    try:
        start = time.monotonic()
        told = False
        while True:
            try:
                locked = _try_lock(fd)
            except OSError:  # ENOLCK, EOPNOTSUPP: no locking on this file system
                break
            if locked:
                break
            if not told and on_wait is not None:
                on_wait(_holder(fd))
                told = True
            if timeout is not None and time.monotonic() - start > timeout:
                raise LockTimeout(
                    f"{path} is held by {_holder(fd)} (another `essencekit pull-weights`?) for over "
                    f"{timeout:.0f} s; wait for it to finish or stop it"
                )
            time.sleep(poll)
        if locked:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, _lock_info().encode("utf-8"))
        yield
    finally:
        if locked:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                _unlock(fd)
        os.close(fd)


# --------------------------------------------------------------------------- licenses


def licenses_path() -> Path:
    return cache_root() / LICENSES_FILE


def license_accepted(artifact: WeightArtifact) -> bool:
    """Whether the user accepted ``artifact``'s license (the same text) in this cache."""
    data = _read_json(licenses_path()) or {}
    entry = data.get(artifact.name)
    return isinstance(entry, dict) and entry.get("license") == artifact.license


def record_license_acceptance(artifacts: list[WeightArtifact]) -> None:
    data = _read_json(licenses_path()) or {}
    for artifact in artifacts:
        data[artifact.name] = {"license": artifact.license, "accepted_at": _now()}
    write_json_atomic(licenses_path(), data)
