"""``essencekit doctor``: is this installation ready, and if not, what to do about it."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
import tempfile
from dataclasses import asdict, dataclass

OK, INFO, WARN, ERROR = "ok", "info", "warn", "error"

# weights that the main commands need; missing ones are worth a warning, not an error
ESSENTIAL_GROUP = "faces"

# The main job, the quick start's: doctor exits 1 unless it can run. Transfer inverts each face
# with e4e and decodes with the generator embedded in the same checkpoint (no stylegan2-ffhq),
# finds faces with an aligner (its model ships in the aligner's package) and loads the
# published essence: essencekit.transfers.api.Transferrer and essencekit.essence_mix.load_term.
MAIN_JOB = "essencekit transfer photos/ --essence joker"
MAIN_JOB_WEIGHTS = ("e4e-ffhq", "joker")


@dataclass
class Check:
    """One line of the report: what was checked, how it stands, and what to do."""

    section: str
    name: str
    status: str
    detail: str = ""


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _environment() -> list[Check]:
    checks = [
        Check(
            "environment", "python", OK if sys.version_info >= (3, 10) else ERROR,
            f"{platform.python_version()} ({sys.executable})",
        ),
        Check("environment", "essencekit", OK, _version("essencekit") or "not installed (running from source)"),
    ]
    for distribution in ("torch", "open_clip_torch", "numpy", "pillow", "safetensors"):
        found = _version(distribution)
        checks.append(Check(
            "environment", distribution, OK if found else ERROR,
            found or f"missing: run `pip install {distribution}`",
        ))
    from .hugepages import huge_pages_status

    # faster CPU work when on; never required
    checks.append(Check("environment", "huge pages", INFO, huge_pages_status()[1]))
    return checks


def _backends() -> list[Check]:
    from .backends import select_backend
    from .errors import EssencekitError
    from .inventory import backends_report

    checks = []
    for row in backends_report():
        detail = f'{row["device"]}, autocast {row["autocast_dtype"]}' if row["available"] else row["reason"]
        # an absent GPU is a fact about the machine, not a fault of the installation
        checks.append(Check("backends", row["name"], OK if row["available"] else INFO, detail))
    try:
        chosen = select_backend()
        checks.append(Check("backends", "selected", OK, f"{chosen.name} (override with --backend or ESSENCEKIT_BACKEND)"))
    except EssencekitError as error:
        checks.append(Check("backends", "selected", ERROR, str(error)))
    return checks


def _cache() -> list[Check]:
    from .cache import cache_root

    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return [Check("cache", "folder", ERROR, f"{root} cannot be created ({error.strerror}); set ESSENCEKIT_HOME")]
    problem = ""
    if not os.access(root, os.W_OK):
        problem = "read-only"
    else:  # access() trusts the mode bits; some file systems say no only when written to
        try:
            with tempfile.NamedTemporaryFile(dir=root, prefix=".doctor-"):
                pass
        except OSError as error:
            problem = error.strerror or "not writable"
    if problem:
        # a shared, read-only cache serves verified weights fine; the main job's check below
        # says whether the ones needed are there
        return [Check(
            "cache", "folder", WARN,
            f"{root} is {problem}: its weights can be used, but pull-weights and the W+ cache of transfer "
            "need a writable folder (set ESSENCEKIT_HOME, or --cache-dir for one pull)",
        )]
    return [Check("cache", "folder", OK, str(root))]


def _weight_check(artifact, *, section: str = "weights", required: bool = False) -> Check:
    """``artifact``'s state in the cache. ``required``: the main job cannot run without it, so
    anything but verified is an error (transfer refuses unverified files too)."""
    from .cache import pull_command, usable_state

    state = usable_state(artifact)
    if state.state == "verified":
        via = f" (its fallback {state.via})" if state.via else ""
        return Check(section, artifact.name, OK, f"verified{via}: {state.path}")
    if state.state == "missing":
        if required:
            return Check(section, artifact.name, ERROR, f"not downloaded: run {pull_command(artifact)}")
        if artifact.group == ESSENTIAL_GROUP:
            return Check(section, artifact.name, WARN, f"not downloaded ({pull_command(artifact)})")
        return Check(section, artifact.name, INFO, "not downloaded (optional)")
    if state.state == "unverified":
        return Check(section, artifact.name, ERROR if required else WARN,
                     f"{state.message}: run {pull_command(artifact)}")
    return Check(
        section, artifact.name, ERROR,
        f"{state.state}: {state.message}; run {pull_command(artifact, repair=True)}",
    )


def _main_job() -> list[Check]:
    """Can the quick start's transfer run: its weights verified, a face aligner usable. One
    ``pull-weights`` line at the end fetches every missing weight at once."""
    from .cache import get_artifact
    from .errors import EssencekitError
    from .faces import get_aligner

    section = "main job"
    checks, missing = [], []
    for name in MAIN_JOB_WEIGHTS:
        try:
            check = _weight_check(get_artifact(name), section=section, required=True)
        except EssencekitError as error:  # not registered (a plugin took the name, or none has it)
            check = Check(section, name, ERROR, str(error))
        if check.detail.startswith("not downloaded"):
            missing.append(name)
        checks.append(check)
    try:
        aligner = get_aligner()
        checks.append(Check(section, "face aligner", OK, aligner.name))
    except EssencekitError as error:
        checks.append(Check(section, "face aligner", ERROR, str(error)))
    if all(check.status == OK for check in checks):
        checks.append(Check(section, MAIN_JOB, OK, "can run"))
    else:
        fix = f"; run `essencekit pull-weights {' '.join(missing)}`" if missing else ""
        checks.append(Check(section, MAIN_JOB, ERROR, f"cannot run (see the lines above){fix}"))
    return checks


def _weights() -> list[Check]:
    from .errors import EssencekitError
    from .plugins import registered

    checks = []
    for artifact in registered("weights").values():
        try:
            # the main job's weights are judged as the "main job" section judges them, so the
            # report does not call one file optional here and an error there
            needed = artifact.name in MAIN_JOB_WEIGHTS
            check = _weight_check(artifact, required=needed)
            if needed and check.status != OK:
                check.detail += f" (needed by the main job, `{MAIN_JOB}`)"
            checks.append(check)
        except EssencekitError as error:  # e.g. a plugin's fallback names no artifact
            checks.append(Check("weights", artifact.name, ERROR, str(error)))
    return checks


def _plugins() -> list[Check]:
    from .plugins import load_errors, plugins_info, registered

    for registry in ("backends", "clip_models", "weights", "aligners"):
        registered(registry)  # hooks that fail are reported only once they have run
    checks = [
        Check("plugins", info.name, OK, "built-in" if info.builtin else (info.distribution or "third-party"))
        for info in plugins_info()
    ]
    checks += [Check("plugins", error.plugin, WARN, error.message) for error in load_errors()]
    return checks


def run_checks() -> list[Check]:
    """Every check, in report order. A section that itself fails becomes one error line."""
    checks: list[Check] = []
    for section, gather in (
        ("environment", _environment), ("backends", _backends), ("cache", _cache),
        ("weights", _weights), ("plugins", _plugins), ("main job", _main_job),
    ):
        try:
            checks += gather()
        except Exception as error:  # noqa: BLE001 - doctor reports, it does not crash
            checks.append(Check(section, "check", ERROR, f"{type(error).__name__}: {error}"))
    return checks


def report() -> dict:
    """The doctor's findings as JSON-ready data; ``ok`` is false when anything is an error."""
    checks = run_checks()
    return {
        "ok": not any(c.status == ERROR for c in checks),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "cache": os.fspath(__import__("essencekit.cache", fromlist=["cache_root"]).cache_root()),
        "checks": [asdict(c) for c in checks],
    }
