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
        with tempfile.NamedTemporaryFile(dir=root, prefix=".doctor-"):
            pass
    except OSError as error:
        return [Check("cache", "folder", ERROR, f"{root} is not writable ({error.strerror}); set ESSENCEKIT_HOME")]
    return [Check("cache", "folder", OK, str(root))]


def _weight_check(artifact) -> Check:
    from .cache import pull_command, usable_state

    state = usable_state(artifact)
    if state.state == "verified":
        via = f" (its fallback {state.via})" if state.via else ""
        return Check("weights", artifact.name, OK, f"verified{via}: {state.path}")
    if state.state == "missing":
        if artifact.group == ESSENTIAL_GROUP:
            return Check("weights", artifact.name, WARN, f"not downloaded ({pull_command(artifact)})")
        return Check("weights", artifact.name, INFO, "not downloaded (optional)")
    if state.state == "unverified":
        return Check("weights", artifact.name, WARN, f"{state.message}: run {pull_command(artifact)}")
    return Check(
        "weights", artifact.name, ERROR,
        f"{state.state}: {state.message}; run {pull_command(artifact, repair=True)}",
    )


def _weights() -> list[Check]:
    from .errors import EssencekitError
    from .plugins import registered

    checks = []
    for artifact in registered("weights").values():
        try:
            checks.append(_weight_check(artifact))
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
        ("weights", _weights), ("plugins", _plugins),
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
