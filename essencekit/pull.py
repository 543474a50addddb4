"""``pull-weights`` as a Python API: choose artifacts, accept licenses, fetch (or import),
verify, convert and record them in the cache.

    from essencekit import pull
    pull.pull()                              # the "faces" group: what transfer and extract need
    pull.pull(["essences", "clip-rn50"])     # artifacts and groups by name
    pull.pull(["faces"], from_dir="/media/usb/weights")   # air-gapped: files copied by hand
    pull.verify(repair=True)                 # re-hash everything, refetch what is bad

Every artifact is fetched under its own lock, so concurrent runs never clash; a file only
reaches its final name once its sha256 holds. Artifacts without a published checksum are
pinned in the cache on first download (trust on first use) and checked against that pin from
then on; this is said plainly when it happens. An artifact that names a ``fallback`` (the same
weights in another form) gets the fallback pulled instead when every one of its own mirrors
fails (or, with ``from_dir``, when its file is not in the folder); this is said too.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import cache
from .cache import (
    CacheRecord,
    artifact_dir,
    artifact_lock,
    artifact_state,
    converted_path,
    ensure_dir,
    expected_sha256,
    fallback_artifact,
    get_artifact,
    raw_path,
    sha256_file,
    usable_state,
    write_error,
)
from .download import (
    DEFAULT_POLICY,
    DownloadError,
    NoNetworkError,
    Progress,
    RetryPolicy,
    check_environment,
    download,
    offline,
)
from .errors import EssencekitError
from .urls import redact_url
from .weights import WeightArtifact

DEFAULT_GROUP = "faces"
ENV_MIRROR = "ESSENCEKIT_MIRROR"

Notify = Callable[[str], None]


def _stderr(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------- the registry


def artifacts() -> dict[str, WeightArtifact]:
    """Every registered artifact by name, in plugin order."""
    from .plugins import registered

    return dict(registered("weights"))


def groups() -> dict[str, list[str]]:
    """Group name -> the artifact names in it."""
    result: dict[str, list[str]] = {}
    for name, artifact in artifacts().items():
        result.setdefault(artifact.group, []).append(name)
    return result


def select(names: Sequence[str] = (), *, all: bool = False) -> list[WeightArtifact]:  # noqa: A002
    """The artifacts that ``names`` (artifact or group names) mean; none: the ``faces`` group;
    ``all=True``: every artifact. Unknown names raise one error that lists them."""
    registry = artifacts()
    if all:
        return list(registry.values())
    by_group = groups()
    if not names:
        if DEFAULT_GROUP not in by_group:
            raise EssencekitError(f"no artifact is registered in the default group {DEFAULT_GROUP!r}")
        names = [DEFAULT_GROUP]
    chosen: dict[str, WeightArtifact] = {}
    unknown = []
    for name in names:
        if name in registry:
            chosen[name] = registry[name]
        elif name in by_group:
            for member in by_group[name]:
                chosen[member] = registry[member]
        else:
            unknown.append(name)
    if unknown:
        import difflib

        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, [*registry, *by_group], n=2)
            hints.append(f"{name!r}" + (f" (did you mean {' or '.join(close)}?)" if close else ""))
        raise EssencekitError(
            f"unknown artifact or group {', '.join(hints)}; groups: {', '.join(by_group)}; "
            "`essencekit pull-weights --list` shows every artifact"
        )
    return list(chosen.values())


# --------------------------------------------------------------------------- mirrors


def env_mirrors() -> list[str]:
    """Mirrors from ``ESSENCEKIT_MIRROR`` (several separated by commas or spaces)."""
    value = os.environ.get(ENV_MIRROR, "")
    return [item for item in value.replace(",", " ").split() if item]


def check_mirror(url: str) -> str:
    """Validate a user mirror base URL; returns it without a trailing slash."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        hint = " (for a local folder use --from DIR)" if not parts.scheme or parts.scheme == "file" else ""
        raise EssencekitError(f"mirror {redact_url(url)!r} is not an http(s) URL{hint}")
    return url.rstrip("/")


def mirror_urls(artifact: WeightArtifact, mirrors: Iterable[str]) -> list[str]:
    """The URLs to try for ``artifact``: each user mirror's ``URL/<file name>`` first, then the
    artifact's own mirrors, in order."""
    urls = [f"{check_mirror(m)}/{artifact.filename}" for m in mirrors]
    return list(dict.fromkeys([*urls, *artifact.urls]))


# --------------------------------------------------------------------------- licenses


def licenses_to_accept(selected: Iterable[WeightArtifact]) -> list[WeightArtifact]:
    """The selected artifacts whose license must be accepted and was not (in this cache)."""
    return [a for a in selected if a.license_must_accept and not cache.license_accepted(a)]


def accept_licenses(selected: Iterable[WeightArtifact]) -> None:
    """Record acceptance of the licenses of ``selected`` in the cache."""
    selected = [a for a in selected if a.license_must_accept]
    if selected:
        cache.record_license_acceptance(selected)


class LicenseNotAccepted(EssencekitError):
    """A license must be accepted before the artifact is downloaded."""


def license_error(pending: list[WeightArtifact], *, shown: bool = False) -> LicenseNotAccepted:
    """The one-line refusal. ``shown=True`` when the license texts were just shown (the
    command line): then they are not repeated; otherwise each license's first line is named."""
    names = ", ".join(a.name for a in pending)
    one = len(pending) == 1
    needs = f"{names} {'needs its license' if one else 'need their licenses'} accepted"
    if shown:
        return LicenseNotAccepted(
            f"{needs} (shown above): rerun with --accept-licenses, or answer yes when asked"
        )
    terms = "; ".join(f"{a.name}: {(a.license.splitlines() or [''])[0]}" for a in pending)
    return LicenseNotAccepted(
        f"{needs} before download ({terms}): rerun with --accept-licenses, or answer yes when asked"
    )


# --------------------------------------------------------------------------- results


@dataclass
class PullResult:
    """What happened to one artifact. ``action``: ``present`` (already verified and recorded),
    ``downloaded``, ``imported`` (``--from``), ``verified`` (a file already in the cache was
    checked, and converted if needed) or ``failed`` (``message`` says why, in one line).
    ``via`` names the fallback artifact that provides it (``path`` is then the fallback's file),
    or is ``None``."""

    name: str
    action: str
    path: Path | None = None
    size: int | None = None
    source: str = ""
    message: str = ""
    pinned_now: bool = False
    via: str | None = None

    @property
    def ok(self) -> bool:
        return self.action != "failed"


@dataclass
class VerifyResult:
    """One artifact re-hashed: ``state`` as in :class:`essencekit.cache.ArtifactState`, and
    ``repaired`` when ``--repair`` fetched it again (then ``state`` is the state afterwards)."""

    name: str
    state: str
    path: Path | None
    message: str = ""
    repaired: bool = False

    @property
    def ok(self) -> bool:
        return self.state in ("verified", "missing")


class NotInFolder(EssencekitError):
    """``from_dir`` (``folder``) does not hold the artifact's file."""

    def __init__(self, message: str, folder: Path | None = None):
        super().__init__(message)
        self.folder = folder


class PullFailed(EssencekitError):
    """One or more artifacts could not be pulled; ``results`` holds every artifact's outcome."""

    def __init__(self, message: str, results: list[PullResult]):
        super().__init__(message)
        self.results = results


# --------------------------------------------------------------------------- importing (--from)


def find_in_dir(artifact: WeightArtifact, folder: Path) -> Path | None:
    """``folder/<file name>``, or the same name one folder down."""
    direct = folder / artifact.filename
    if direct.is_file():
        return direct
    with contextlib.suppress(OSError):
        for child in sorted(folder.iterdir()):
            candidate = child / artifact.filename
            if child.is_dir() and candidate.is_file():
                return candidate
    return None


def _import_file(artifact: WeightArtifact, source: Path, dest: Path, expected: str | None,
                 progress: Progress, link: bool, check=None) -> tuple[str, int]:
    """Copy (or hard-link) ``source`` into the cache as ``dest`` once its checksum holds."""
    size = source.stat().st_size
    if artifact.size is not None and size != artifact.size:
        raise EssencekitError(
            f"{source} is not {artifact.name}: it is {size:,} bytes, expected {artifact.size:,} "
            "(a different or truncated file; nothing was placed in the cache)"
        )
    part = dest.with_name(dest.name + ".import.part")
    with contextlib.suppress(FileNotFoundError):
        part.unlink()
    linked = False
    if link:
        with contextlib.suppress(OSError):
            os.link(source, part)
            linked = True
    digest = hashlib.sha256()
    done = 0
    progress.start(f"{artifact.name} (import)", size, 0)
    try:
        with open(source, "rb") as reader, (contextlib.nullcontext() if linked else open(part, "wb")) as writer:
            while chunk := reader.read(4 << 20):
                digest.update(chunk)
                if writer is not None:
                    writer.write(chunk)
                done += len(chunk)
                progress.update(done)
            if writer is not None:
                writer.flush()
                os.fsync(writer.fileno())
    except OSError as error:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        if getattr(error, "filename", None) == str(source):
            raise EssencekitError(f"cannot read {source}: {error.strerror}") from None
        raise write_error(error, part) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        raise
    finally:
        progress.finish()
    hexdigest = digest.hexdigest()
    if expected is not None and hexdigest != expected:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        raise EssencekitError(
            f"{source} is not {artifact.name}: its sha256 is {hexdigest[:16]}..., expected {expected[:16]}... "
            "(a different or corrupt file; nothing was placed in the cache)"
        )
    if check is not None:
        try:
            check(part)
        except EssencekitError as error:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            raise EssencekitError(
                f"{source} is not {artifact.name}: the file is {error}; nothing was placed in the cache"
            ) from None
    try:
        os.replace(part, dest)
    except OSError as error:
        raise write_error(error, dest) from None
    return hexdigest, done


# --------------------------------------------------------------------------- one artifact


def _hint(artifact: WeightArtifact, alt: WeightArtifact | None = None) -> str:
    files = artifact.filename if alt is None else f"{artifact.filename} (or {alt.filename})"
    return (
        f"without internet, copy {files} into a folder and run "
        f"`essencekit pull-weights {artifact.name} --from FOLDER`"
    )


def _content_check(artifact: WeightArtifact):
    """``check(path)`` for the download engine, or ``None`` when the artifact's kind of file
    is only checked by its conversion."""
    if artifact.convert != "open-clip-safetensors":
        return None
    from .convert import check_download

    return lambda path: check_download(artifact, path)


def _remove_artifact_files(artifact: WeightArtifact) -> None:
    """Drop the cached files and record of ``artifact`` (keeping a first-use pin)."""
    cache.forget_record(artifact)
    targets = {raw_path(artifact), converted_path(artifact)}
    for path in targets:
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def pull_artifact(
    artifact: WeightArtifact | str,
    *,
    from_dir: str | os.PathLike | None = None,
    mirrors: Sequence[str] = (),
    force: bool = False,
    link: bool = False,
    progress: Progress | None = None,
    policy: RetryPolicy | None = None,
    notify: Notify | None = None,
    lock_timeout: float | None = None,
    use_fallback: bool = True,
) -> PullResult:
    """Make ``artifact`` present and verified in the cache; returns what was done.

    Already verified: nothing to do (``present``). Otherwise it is imported from ``from_dir``
    (no network) or downloaded (``mirrors`` first), checked, pinned on first use when it has
    no published checksum, converted when the artifact asks for it, and recorded. ``force``
    fetches again even when present (``--repair``). Raises :class:`EssencekitError` with a
    one-line message on failure; the cache then holds nothing new under a final name.
    Licenses are not checked here (see :func:`pull`), except a fallback's.

    When the artifact names a ``fallback`` (and ``use_fallback``): while it is missing and its
    fallback is verified, that counts as present (``via`` names the fallback); when every
    mirror fails (HTTP errors, web pages, wrong files, unreachable hosts) or ``from_dir`` lacks
    its file, ``notify`` is told and the fallback is pulled instead. Then the result carries
    the artifact's name, the fallback's file and ``via``.
    """
    if isinstance(artifact, str):
        artifact = get_artifact(artifact)
    progress = progress or Progress()
    notify = notify or _stderr
    alt = fallback_artifact(artifact) if use_fallback else None  # an unknown name: one clear error
    if alt is not None and not force and artifact_state(artifact).state == "missing":
        alt_state = artifact_state(alt)
        if alt_state.state == "verified":
            record = alt_state.record
            return PullResult(artifact.name, "present", alt_state.path, record.ready_size, record.source, via=alt.name)
    options = dict(from_dir=from_dir, mirrors=mirrors, link=link, progress=progress, policy=policy,
                   notify=notify, lock_timeout=lock_timeout)
    try:
        return _pull_one(artifact, force=force, hint_alt=alt, **options)
    except (DownloadError, NotInFolder) as error:
        if alt is None:
            raise
        failed = error
    return _pull_fallback(artifact, alt, failed, options)


def _trust_note(alt: WeightArtifact) -> str:
    _expected, how = expected_sha256(alt)
    if how == "registry":
        return "checked against its published sha256"
    if how == "first-use":
        return "checked against the sha256 pinned at its first download in this cache"
    return "unpinned, trust on first use: no checksum is published for it, so its first download is pinned"


def _pull_fallback(artifact: WeightArtifact, alt: WeightArtifact, failed: EssencekitError, options: dict) -> PullResult:
    notify = options["notify"]
    if alt.license_must_accept and not cache.license_accepted(alt):
        raise LicenseNotAccepted(
            f"{artifact.name} is unavailable ({_reasons(failed)}) and its fallback {alt.name} needs its license "
            f"accepted first: run `essencekit pull-weights {alt.name} --accept-licenses`"
        )
    if isinstance(failed, NotInFolder):
        notify(
            f"{artifact.name}: {artifact.filename} is not in the folder; importing its fallback {alt.name} "
            f"({alt.filename}) instead ({_trust_note(alt)})"
        )
    else:
        notify(
            f"{artifact.name}: every mirror failed ({'; '.join(failed.by_host)}); falling back to {alt.name}, "
            f"the same weights as {alt.filename} ({_trust_note(alt)})"
        )
    try:
        result = _pull_one(alt, force=False, hint_alt=None, **options)
    except (DownloadError, NotInFolder) as error:
        raise _combined_failure(artifact, alt, failed, error) from None  # the first failure was just told
    result.name, result.via = artifact.name, alt.name
    return result


def _reasons(error: EssencekitError) -> str:
    reasons = getattr(error, "reasons", None)
    return "; ".join(reasons) if reasons else str(error)


def _combined_failure(artifact: WeightArtifact, alt: WeightArtifact, first: EssencekitError,
                      second: EssencekitError) -> EssencekitError:
    """One line for "neither the artifact nor its fallback could be had" (the artifact's own
    failure was told through ``notify`` just before; its reasons stay in ``reasons``)."""
    if isinstance(first, NotInFolder) and isinstance(second, NotInFolder):
        return NotInFolder(
            f"neither {artifact.filename} ({artifact.name}) nor {alt.filename} (its fallback {alt.name}) is in "
            f"{first.folder}: copy one of them there (from {redact_url(artifact.urls[0])}, or "
            f"{redact_url(alt.urls[0])} saved as {alt.filename})", first.folder,
        )
    if isinstance(first, NotInFolder):
        told = f"{artifact.filename} is not in {first.folder}"
    else:
        told = "its mirrors failed, as said above"
    message = (
        f"could not get {artifact.name} ({told}) nor its fallback {alt.name} ({_reasons(second)}); "
        + _hint(artifact, alt)
    )
    if isinstance(first, NoNetworkError) and isinstance(second, NoNetworkError):
        return NoNetworkError(f"no network: {message}", reasons=[*first.reasons, *second.reasons])
    return DownloadError(message, reasons=[*_as_list(first), *_as_list(second)], hint=_hint(artifact, alt))


def _as_list(error: EssencekitError) -> list[str]:
    reasons = getattr(error, "reasons", None)
    return list(reasons) if reasons else [str(error)]


def _pull_one(
    artifact: WeightArtifact,
    *,
    from_dir: str | os.PathLike | None,
    mirrors: Sequence[str],
    force: bool,
    link: bool,
    progress: Progress,
    policy: RetryPolicy | None,
    notify: Notify,
    lock_timeout: float | None,
    hint_alt: WeightArtifact | None,
) -> PullResult:
    """:func:`pull_artifact` for exactly this artifact (no fallback)."""
    if not force:
        # nothing to fetch or write: no lock either, so a read-only shared cache still works
        state = artifact_state(artifact)
        if state.state == "verified" and (state.path == raw_path(artifact) or not raw_path(artifact).exists()):
            return PullResult(artifact.name, "present", state.path, state.record.ready_size, state.record.source)
    ensure_dir(artifact_dir(artifact))
    check = _content_check(artifact)

    def waiting(holder: str) -> None:
        notify(f"{artifact.name}: waiting for {holder}, which is fetching it too")

    with artifact_lock(artifact, on_wait=waiting, timeout=lock_timeout):
        state = artifact_state(artifact)
        if state.state == "verified" and not force:
            leftover = raw_path(artifact)
            if state.path != leftover and leftover.exists():  # interrupted just after converting
                with contextlib.suppress(OSError):
                    leftover.unlink()
            return PullResult(artifact.name, "present", state.path, state.record.ready_size, state.record.source)
        if state.state in ("corrupt", "outdated") and not force:
            notify(f"{artifact.name}: the cached copy is {state.state} ({state.message}); fetching it again")
        if force or state.state in ("corrupt", "outdated"):
            _remove_artifact_files(artifact)

        raw = raw_path(artifact)
        expected, pinned = expected_sha256(artifact)
        action = "verified"  # a verified file was already in the cache (converted now if needed)
        source = str(raw)
        digest = size = None
        if raw.exists():  # verified earlier (only verified files get this name); check again
            digest = sha256_file(raw)
            if expected is not None and digest != expected:
                raw.unlink()
                digest = None
            elif check is not None:
                try:
                    check(raw)
                except EssencekitError as error:
                    raw.unlink()
                    raise EssencekitError(f"{raw} is {error}; it was deleted, so the next pull fetches it again") \
                        from None
            if digest is not None:
                size = raw.stat().st_size
        if digest is None:
            if from_dir is not None:
                folder = Path(from_dir).expanduser()
                if not folder.is_dir():
                    raise EssencekitError(f"--from {folder}: no such folder")
                found = find_in_dir(artifact, folder)
                if found is None:
                    published = artifact.urls[0].rsplit("/", 1)[-1].split("?")[0]
                    save_as = f"; save it as {artifact.filename}" if published != artifact.filename else ""
                    raise NotInFolder(
                        f"{artifact.filename} ({artifact.name}) is not in {folder}: copy it there "
                        f"(from {redact_url(artifact.urls[0])}{save_as})", folder,
                    )
                digest, size = _import_file(artifact, found, raw, expected, progress, link, check)
                action, source = "imported", str(found.absolute())
            else:
                try:
                    result = download(
                        mirror_urls(artifact, mirrors), raw, sha256=expected, size=artifact.size,
                        label=artifact.name, progress=progress, policy=policy or DEFAULT_POLICY,
                        hint=_hint(artifact, hint_alt), check=check, notify=notify,
                    )
                except DownloadError as error:
                    if pinned != "first-use" or not any("sha256 mismatch" in r for r in error.reasons):
                        raise
                    pin = artifact_dir(artifact) / cache.PIN_FILE
                    note = (f"the mirrors now serve a file other than the one pinned on first use; if it really "
                            f"changed upstream, delete {pin} to trust the new one")
                    raise type(error)(f"{error}; {note}", reasons=[*error.reasons, note], hint=error.hint,
                                      by_host=[*error.by_host, note]) from None
                digest, size, source = result.sha256, result.size, result.url
                action = "downloaded"

        pinned_now = False
        if expected is None:
            cache.write_pin(artifact, digest, size, source)
            pinned, pinned_now = "first-use", True
            notify(
                f"{artifact.name}: no published checksum exists for it, so its first download is trusted: "
                f"sha256 {digest} (from {source}) is now pinned in {artifact_dir(artifact)} and every later "
                "copy must match it (trust on first use)"
            )

        target = converted_path(artifact)
        metadata = {
            "artifact": artifact.name,
            # shared with the essence file: never a mirror's password or signed query
            "source_url": redact_url(source if source.startswith(("http://", "https://"))
                                     else (artifact.urls[0] if artifact.urls else "")),
            "source_sha256": digest,
            "license": artifact.license,
        }
        try:
            from .convert import convert_artifact

            ready = convert_artifact(artifact, raw, target, metadata=metadata) if target else raw
        except EssencekitError:
            raise
        except OSError as error:
            raise write_error(error, target or raw) from None
        except Exception as error:  # noqa: BLE001 - e.g. safetensors' own error for a full disk
            text = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            if "No space left" in text or "os error 28" in text.lower():
                raise cache.DiskFullError(
                    f"disk full while converting {artifact.name} into {target}: free some space, or put the "
                    "cache on another disk with ESSENCEKIT_HOME or --cache-dir"
                ) from None
            raise EssencekitError(
                f"{artifact.name} was downloaded and verified, but converting it failed ({type(error).__name__}: "
                f"{text}); the verified file stays in {artifact_dir(artifact)} and the next pull retries"
            ) from None
        if ready != raw:
            # temporary files are created private (0600); a cache file gets the download's mode
            with contextlib.suppress(OSError):
                shutil.copymode(raw, ready)
        stat = ready.stat()
        ready_sha = digest if ready == raw else sha256_file(ready)
        cache.write_record(CacheRecord(
            name=artifact.name,
            ready=ready.name,
            ready_sha256=ready_sha,
            ready_size=stat.st_size,
            ready_mtime_ns=stat.st_mtime_ns,
            source_sha256=digest,
            source_size=size,
            source=source,
            pinned=pinned,
            convert=artifact.convert,
        ))
        if ready != raw:
            # the converted file is what loaders read; the published file is not needed again
            with contextlib.suppress(FileNotFoundError):
                raw.unlink()
        return PullResult(artifact.name, action, ready, stat.st_size, source, pinned_now=pinned_now)


# --------------------------------------------------------------------------- many artifacts


def pull(
    names: Sequence[str] = (),
    *,
    all: bool = False,  # noqa: A002
    accept_licenses: bool = False,
    confirm: Callable[[list[WeightArtifact]], bool] | None = None,
    from_dir: str | os.PathLike | None = None,
    mirrors: Sequence[str] | None = None,
    link: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    policy: RetryPolicy | None = None,
    notify: Notify | None = None,
    on_result: Callable[[PullResult], None] | None = None,
) -> list[PullResult]:
    """Pull the artifacts ``names`` (artifacts or groups; none: ``faces``; ``all``: every one).

    Licenses that must be accepted are accepted by ``accept_licenses=True`` or by
    ``confirm(artifacts) -> bool`` (an interactive question), and remembered in the cache;
    otherwise :class:`LicenseNotAccepted` is raised before anything is downloaded. ``mirrors``
    (default: ``ESSENCEKIT_MIRROR``) are tried first as ``URL/<file name>``. Every artifact is
    attempted; when any failed, :class:`PullFailed` is raised at the end (its ``results`` hold
    each outcome), except that no network, a full disk or an unwritable cache stops at once
    (the artifacts after it are reported "not attempted" unless already in the cache). An
    artifact whose mirrors all fail gets its ``fallback`` pulled instead (see
    :func:`pull_artifact`). ``on_result`` is called as each artifact finishes.
    """
    selected = select(names, all=all)
    # a bad timeout setting is said once, not once per artifact, but only when something will
    # be downloaded: --from DIR and an already verified cache never read it
    if from_dir is None and (force or any(usable_state(a).state != "verified" for a in selected)):
        check_environment()
    mirrors = list(env_mirrors() if mirrors is None else mirrors)
    for mirror in mirrors:
        check_mirror(mirror)
    for artifact in selected:
        fallback_artifact(artifact)  # an unknown fallback name: one clear error before any download
    pending = licenses_to_accept(selected)
    if pending:
        if accept_licenses or (confirm is not None and confirm(pending)):
            cache.record_license_acceptance(pending)
        else:
            raise license_error(pending)
    results: list[PullResult] = []
    stop: EssencekitError | None = None
    for artifact in selected:
        if stop is not None:
            state = usable_state(artifact)
            if state.state == "verified" and not force:
                result = PullResult(artifact.name, "present", state.path, state.record.ready_size,
                                    state.record.source, via=state.via)
            else:
                result = PullResult(artifact.name, "failed", message=f"not attempted: {_stop_reason(stop)}")
        else:
            try:
                result = pull_artifact(
                    artifact, from_dir=from_dir, mirrors=mirrors, force=force, link=link,
                    progress=progress, policy=policy, notify=notify,
                )
            except (NoNetworkError, cache.DiskFullError, cache.CachePermissionError) as error:
                # the next artifact would fail the same way: say it once
                stop = error
                result = PullResult(artifact.name, "failed", message=str(error))
            except EssencekitError as error:
                result = PullResult(artifact.name, "failed", message=str(error))
        results.append(result)
        if on_result is not None:
            on_result(result)
    failed = [r for r in results if not r.ok]
    if failed:
        if stop is not None:
            raise PullFailed(str(stop), results)
        if len(failed) == 1:
            raise PullFailed(failed[0].message, results)
        raise PullFailed(
            f"{len(failed)} of {len(results)} artifacts failed: "
            + "; ".join(f"{r.name}: {r.message}" for r in failed), results,
        )
    return results


def _stop_reason(error: EssencekitError) -> str:
    """A short reason for the artifacts not attempted after ``error`` (said in full once)."""
    if isinstance(error, NoNetworkError):
        return "no network (see above)"
    if isinstance(error, cache.DiskFullError):
        return "the disk is full (see above)"
    if isinstance(error, cache.CachePermissionError):
        return "the cache folder cannot be written (see above)"
    return str(error)


def verify(
    names: Sequence[str] = (),
    *,
    all: bool = True,  # noqa: A002
    repair: bool = False,
    on_result: Callable[[VerifyResult], None] | None = None,
    progress: Progress | None = None,
    hash_progress: Progress | None = None,
    **pull_options,
) -> list[VerifyResult]:
    """Re-hash the cached files of ``names`` (default: every artifact) against their records
    and the registry. With ``repair=True`` every corrupt, outdated or unverified artifact is
    fetched again (``progress`` and ``pull_options`` as for :func:`pull_artifact`). Missing
    artifacts are reported, not fetched (one whose fallback is in the cache says so).
    ``hash_progress`` is told how each re-hash advances."""
    selected = select(names, all=all and not names)
    if repair:
        check_environment()
    results = []
    for artifact in selected:
        state = artifact_state(artifact, rehash=True, progress=hash_progress)
        result = VerifyResult(artifact.name, state.state, state.path, state.message)
        if state.state == "missing" and artifact.fallback is not None:
            try:
                alt = fallback_artifact(artifact)
                if artifact_state(alt).state == "verified":
                    result.message = f"not downloaded; its fallback {alt.name} provides it"
            except EssencekitError as error:
                result.message = f"not downloaded; {error}"
        if repair and state.state in ("corrupt", "outdated", "unverified"):
            try:
                pulled = pull_artifact(artifact, force=state.state != "unverified", progress=progress,
                                       **pull_options)
                how = pulled.action if pulled.via is None else f"{pulled.action} its fallback {pulled.via}"
                result = VerifyResult(artifact.name, "verified", pulled.path, f"repaired ({how})", True)
            except EssencekitError as error:
                result = VerifyResult(artifact.name, state.state, state.path, f"{state.message}; repair failed: {error}")
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


# --------------------------------------------------------------------------- listing


def list_artifacts(names: Sequence[str] = ()) -> list[dict]:
    """Every artifact (or those ``names`` select) with its size, license and cache status
    (``verified``, ``unverified``, ``missing``, ``corrupt`` or ``outdated``), as plain data.
    A present file whose size and mtime changed since it was verified is re-hashed.
    ``provided_by`` names the artifact whose file loaders get (itself, its verified fallback
    while it is missing, or ``None``)."""
    from .plugins import owner_of

    selected = select(names) if names else list(artifacts().values())
    rows = []
    for artifact in selected:
        state = artifact_state(artifact)
        _expected, pinned = expected_sha256(artifact)
        provided_by = artifact.name if state.state == "verified" else None
        if state.state == "missing" and artifact.fallback is not None:
            with contextlib.suppress(EssencekitError):  # an unknown fallback: the row still lists
                provided_by = usable_state(artifact).via
        rows.append({
            "name": artifact.name,
            "group": artifact.group,
            "kind": artifact.kind,
            "description": artifact.description,
            "filename": artifact.filename,
            "size": artifact.size,
            "sha256": artifact.sha256,
            "pinned": pinned,
            "license": artifact.license,
            "license_must_accept": artifact.license_must_accept,
            "license_accepted": cache.license_accepted(artifact) if artifact.license_must_accept else None,
            "urls": [redact_url(url) for url in artifact.urls],
            "convert": artifact.convert,
            "fallback": artifact.fallback,
            "provided_by": provided_by,
            "status": state.state,
            "present": state.state != "missing",
            "verified": state.state == "verified",
            "path": str(state.path) if state.path else None,
            "plugin": owner_of("weights", artifact.name),
        })
    return rows


def disk_usage() -> int:
    """Bytes used by the weight cache."""
    total = 0
    root = cache.weights_dir()
    if root.is_dir():
        for path in root.rglob("*"):
            with contextlib.suppress(OSError):
                if path.is_file():
                    total += path.stat().st_size
    return total


__all__ = [
    "DEFAULT_GROUP",
    "ENV_MIRROR",
    "LicenseNotAccepted",
    "NotInFolder",
    "PullFailed",
    "PullResult",
    "VerifyResult",
    "accept_licenses",
    "artifacts",
    "env_mirrors",
    "groups",
    "licenses_to_accept",
    "list_artifacts",
    "mirror_urls",
    "offline",
    "pull",
    "pull_artifact",
    "select",
    "verify",
]
