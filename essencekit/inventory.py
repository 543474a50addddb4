"""What is installed: plugins, their hooks and everything they registered, as plain data.

Shared by ``essencekit plugins`` and ``essencekit doctor`` (and their ``--json``).
"""

from __future__ import annotations

from .plugins import load_errors, owner_of, plugins_info, registered


def _availability(obj) -> tuple[bool, str]:
    try:
        return obj.availability()
    except Exception as error:  # an availability probe must never break the listing
        return False, f"availability check failed: {type(error).__name__}: {error}"


def backends_report(*, probe: bool = True) -> list[dict]:
    """Every registered backend. With ``probe`` each is asked whether it works here, and on
    what device in which precision: that imports torch (and starts CUDA), seconds that
    ``essencekit plugins`` does not spend; ``essencekit doctor`` probes."""
    rows = []
    for name, backend in registered("backends").items():
        row = {
            "name": name,
            "plugin": owner_of("backends", name),
            "priority": backend.priority,
            "description": backend.description,
            # the device policy a backend declares as data (the rest needs the device: probed)
            "max_batch": backend.max_batch,
            "channels_last": backend.channels_last,
            "fast_grouped_conv": backend.fast_grouped_conv,
        }
        if not probe:
            rows.append(row)
            continue
        available, reason = _availability(backend)
        row.update(available=available, reason=reason)
        if available:
            row["device"] = str(backend.device)
            row["autocast_dtype"] = str(backend.autocast_dtype).removeprefix("torch.")
            row["memory_budget"] = backend.memory_budget()
            row["io_workers"] = list(backend.io_workers())
        rows.append(row)
    return rows


def clip_models_report() -> list[dict]:
    return [
        {
            "name": name,
            "plugin": owner_of("clip_models", name),
            "weights": variant.weights,
            "description": variant.description,
        }
        for name, variant in registered("clip_models").items()
    ]


def weights_report() -> list[dict]:
    return [
        {
            "name": name,
            "plugin": owner_of("weights", name),
            "group": artifact.group,
            "kind": artifact.kind,
            "filename": artifact.filename,
            "size": artifact.size,
            "sha256": artifact.sha256,
            "license": artifact.license,
            "license_must_accept": artifact.license_must_accept,
            "description": artifact.description,
        }
        for name, artifact in registered("weights").items()
    ]


def aligners_report() -> list[dict]:
    rows = []
    for name, aligner in registered("aligners").items():
        available, reason = _availability(aligner)
        rows.append(
            {
                "name": name,
                "plugin": owner_of("aligners", name),
                "available": available,
                "reason": reason,
                "description": aligner.description,
            }
        )
    return rows


def plugins_report() -> dict:
    """Every plugin with its hooks, and every registered object, as JSON-ready data. Backends
    are listed, not probed (see :func:`backends_report`)."""
    report = {
        "plugins": [
            {"name": p.name, "builtin": p.builtin, "distribution": p.distribution, "hooks": p.hooks}
            for p in plugins_info()
        ],
        "backends": backends_report(probe=False),
        "clip_models": clip_models_report(),
        "weights": weights_report(),
        "aligners": aligners_report(),
    }
    report["errors"] = [{"plugin": e.plugin, "message": e.message} for e in load_errors()]
    return report
