"""Small measuring helpers shared by the benchmarks: timing, peak memory, worker processes,
and a description of the machine (presenting the figures is :mod:`essencekit.bench.report`'s);
``essencekit bench`` and the development benchmarks in a source checkout's ``benchmarks/`` use them.

Peak memory on the CPU is the process's peak resident set size (``ru_maxrss``): it cannot be
reset, so a benchmark that wants one figure per configuration runs each configuration in its
own process (:func:`run_worker`).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..hugepages import huge_pages_status

GIB = 2**30


def gib(n_bytes: float | None) -> float | None:
    return None if n_bytes is None else n_bytes / GIB


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (``getrusage(RUSAGE_SELF).ru_maxrss``).

    Linux reports KiB, macOS bytes.
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def current_rss_bytes() -> int | None:
    """Resident set size now (Linux ``/proc/self/statm``), or ``None`` where unavailable."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def peak_memory(backend) -> dict:
    """This process's peak so far: ``peak_bytes`` is the backend's peak device memory where it
    reports one (CUDA: ``max_memory_allocated`` since the last ``reset_peak_memory``), else the
    peak RSS; ``peak_kind`` says which (``"device"`` or ``"rss"``). Both raw figures come too."""
    rss = peak_rss_bytes()
    device = backend.peak_memory()  # None where the backend reports none (the CPU)
    return {
        "peak_rss_bytes": rss,
        "peak_device_bytes": device,
        "peak_bytes": device if device is not None else rss,
        "peak_kind": "device" if device is not None else "rss",
    }


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


#: The fewest timed runs a time budget may leave a case (slow cases included: a 15 s case
#: under a 20 s budget still runs three times).
MIN_TIMED_RUNS = 3


def time_repeats(
    fn: Callable[[], Any],
    *,
    repeats: int,
    budget_s: float | None = None,
    synchronize: Callable[[], None] = lambda: None,
) -> tuple[list[float], Any]:
    """Wall-clock seconds of up to ``repeats`` calls of ``fn`` and the last call's result.

    At least one call runs. With ``budget_s``, another call starts only while the time spent so
    far plus the mean call time stays within the budget (so slow cases run fewer times), but
    never fewer than :data:`MIN_TIMED_RUNS` (or ``repeats``, if fewer): a median of one sample
    is no figure to compare.
    ``synchronize`` runs before the clock starts and before it stops (device queues).
    """
    times: list[float] = []
    result = None
    while len(times) < max(1, repeats):
        enough = len(times) >= min(repeats, MIN_TIMED_RUNS)
        if enough and budget_s is not None and sum(times) + sum(times) / len(times) > budget_s:
            break
        result = None  # let the previous output go before the next run
        synchronize()
        start = time.perf_counter()
        result = fn()
        synchronize()
        times.append(time.perf_counter() - start)
    return times, result


# --------------------------------------------------------------------------------------------
# Worker processes


def describe_exit(returncode: int) -> str:
    """Human wording of a worker's exit status (a SIGKILL usually means out of memory)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (likely out of memory)" if -returncode == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with status {returncode}"


def run_worker(
    module: str, spec: dict, workdir: str | os.PathLike, *, timeout: float | None = None,
    env: dict[str, str] | None = None,
) -> dict:
    """Run ``python -m module --worker SPEC.json`` in a fresh process and return its result.

    The worker reads the spec from the JSON file and writes its result as JSON to
    ``spec["result_path"]`` (filled in here). On failure the result is ``{"error": ...}``
    with the exit status and the tail of the worker's stderr.
    """
    workdir = Path(workdir)
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    spec_path = workdir / f"spec-{tag}.json"
    result_path = workdir / f"result-{tag}.json"
    spec = dict(spec, result_path=str(result_path))
    spec_path.write_text(json.dumps(spec))
    command = [sys.executable, "-m", module, "--worker", str(spec_path)]
    try:
        proc = subprocess.run(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            timeout=timeout, env=env,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    finally:
        spec_path.unlink(missing_ok=True)
    if proc.returncode != 0 or not result_path.exists():
        tail = "\n".join(proc.stderr.strip().splitlines()[-6:])
        reason = describe_exit(proc.returncode) if proc.returncode else "wrote no result"
        return {"error": f"worker {reason}" + (f": {tail}" if tail else "")}
    try:
        return json.loads(result_path.read_text())
    finally:
        result_path.unlink(missing_ok=True)


def worker_runner(
    module: str, timeout: float | None = None, env: dict[str, str] | None = None
) -> Callable[[dict, str], dict]:
    """A runner that runs each spec in a fresh ``python -m module --worker`` process, with
    ``env`` and then the spec's ``"env"`` over this process's environment."""

    def run(spec: dict, workdir: str) -> dict:
        # A spec's "env" is read before torch loads in the worker (allocator settings).
        extra = {**(env or {}), **(spec.get("env") or {})}
        return run_worker(module, spec, workdir, timeout=timeout, env={**os.environ, **extra} if extra else None)

    return run


def in_process(run_case: Callable[[dict], dict]) -> Callable[[dict, str], dict]:
    """A runner that runs each spec in this process (tests; peak memory is then this process's)."""

    def run(spec: dict, workdir: str) -> dict:
        return run_case(spec)

    return run


def worker_main(spec_path: str | os.PathLike, run_case: Callable[[dict], dict]) -> int:
    """The ``--worker SPEC`` entry of a benchmark module: run the spec, write its result."""
    spec = json.loads(Path(spec_path).read_text())
    Path(spec["result_path"]).write_text(json.dumps(run_case(spec)))
    return 0


# --------------------------------------------------------------------------------------------
# The machine


def _meminfo() -> dict[str, int]:
    values = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                values[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return values


def available_memory_bytes() -> int | None:
    """``MemAvailable`` (Linux), or ``None``."""
    return _meminfo().get("MemAvailable")


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, where the OS reports them (other work skews timings)."""
    try:
        return list(os.getloadavg())
    except (AttributeError, OSError):
        return None


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux, else ``platform``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            return subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                timeout=5,
            ).stdout.strip() or platform.machine()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def gpu_names() -> list[str]:
    """The GPUs torch can use here, by name (CUDA devices; Apple's GPU as ``mps``)."""
    import torch

    names = []
    try:
        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except RuntimeError:
        pass
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("Apple GPU (mps)")
    return names


def machine_info(backend=None) -> dict:
    """What the figures were measured on: CPU, cores, memory, load, torch, backend and device."""
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    mem = _meminfo()
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "memory_total_bytes": mem.get("MemTotal"),
        "memory_available_bytes": mem.get("MemAvailable"),
        "load_average": load_average(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpus": gpu_names(),
        # the CPU figures depend on it (docs/performance.md); workers inherit this process's setting
        "huge_pages": huge_pages_status()[1],
    }
    if backend is not None:
        device = backend.device
        info.update(
            backend=backend.name,
            device=str(device),
            autocast_dtype=str(backend.autocast_dtype).removeprefix("torch."),
            backend_fast_grouped_conv=backend.fast_grouped_conv,
        )
        if device.type == "cuda":
            props = torch.cuda.get_device_properties(device)
            info["device_name"] = props.name
            info["device_memory_bytes"] = props.total_memory
            info["cuda"] = torch.version.cuda
        elif device.type == "cpu":
            info["device_name"] = info["cpu"]
        else:
            info["device_name"] = device.type
    return info


def describe_machine(info: dict) -> list[str]:
    """A few lines for people, from :func:`machine_info`."""
    total = gib(info.get("memory_total_bytes"))
    available = gib(info.get("memory_available_bytes"))
    memory = f"{total:.1f} GiB RAM" if total else "RAM unknown"
    if available is not None:
        memory += f" ({available:.1f} GiB available at start)"
    load = info.get("load_average")
    lines = [
        f"CPU: {info['cpu']} ({info['arch']}), {info['usable_cores']} usable of "
        f"{info['logical_cores']} logical cores, torch threads {info['torch_threads']}; {memory}"
        + (f"; load average {load[0]:.2f}" if load else ""),
        f"Software: torch {info['torch']}, Python {info['python']}, {info['os']}",
    ]
    if info.get("huge_pages"):
        lines.append(f"Huge pages: {info['huge_pages']}")
    if info.get("gpus"):
        lines.append(f"GPU: {', '.join(info['gpus'])}")
    if "backend" in info:
        device = info.get("device_name", info["device"])
        if "device_memory_bytes" in info:
            device += f", {gib(info['device_memory_bytes']):.0f} GiB"
        lines.append(
            f"Backend: {info['backend']} on {info['device']} ({device}); autocast "
            f"{info['autocast_dtype']}; fast grouped convolutions: "
            + ("yes" if info["backend_fast_grouped_conv"] else "no")
        )
    return lines
