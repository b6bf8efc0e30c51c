"""Shared helpers for the benchmark scripts: timing, run metadata, RESULTS.md sections.

Timing rule for every figure: compile once (reported apart), one warm-up call, then the
median of ``reps`` timed calls, each ended with ``block_until_ready``. Process CPU time is
recorded next to wall time: on a shared machine it shows the work done even when other jobs
steal the cores (wall / CPU ratios far below the core count mean contention).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import resource
import statistics
import sys
import time
from typing import Callable

import jax
import numpy as np

from jaxsynth.io import atomic_write

RESULTS_MD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def load_avg() -> list[float]:
    """1/5/15-minute load average (NaN where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return [float("nan")] * 3


def load_note(load: list[float], cores: int | None = None) -> str:
    """A label for a figure taken at this load: 'quiet' or how shared the machine was."""
    cores = cores or os.cpu_count() or 1
    if load[0] <= 0.5 * cores:
        return f"quiet machine (load {load[0]:.2f} on {cores} cores)"
    return (f"SHARED machine (load {load[0]:.2f} on {cores} cores): absolute figures are too low, "
            "compare rows of the same run only")


def metadata(argv: list[str] | None = None, script: str | None = None) -> dict:
    """Device, versions, date, command and load average of this run."""
    import jaxlib

    device = jax.devices()[0]
    argv = sys.argv[1:] if argv is None else argv
    script = script or os.path.relpath(sys.argv[0], os.path.dirname(os.path.dirname(RESULTS_MD)))
    load = load_avg()
    return dict(
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        command=" ".join(["python", script] + list(argv)),
        device=f"{device.platform.upper()} ({device.device_kind})",
        cpu=_cpu_name(), cores=os.cpu_count(),
        jax=jax.__version__, jaxlib=jaxlib.__version__, numpy=np.__version__,
        python=platform.python_version(), load_avg=load, speed_settings=speed_settings())


# Process settings that change the speed of every system in a run, recorded with its figures.
# GLIBC_TUNABLES=glibc.malloc.hugetlb=1 lets malloc back large buffers with transparent huge
# pages, which cuts the page faults of every fresh output buffer (RESULTS.md, "Page faults").
SPEED_ENV = ("GLIBC_TUNABLES", "XLA_FLAGS", "JAX_NUM_CPU_DEVICES", "OMP_NUM_THREADS")


def speed_settings() -> dict[str, str]:
    """The SPEED_ENV variables that are set, and the kernel's transparent-huge-page mode."""
    found = {k: os.environ[k] for k in SPEED_ENV if os.environ.get(k)}
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            found["transparent_hugepage"] = f.read().strip()
    except OSError:
        pass
    return found


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def metadata_lines(meta: dict, load_end: list[float] | None = None) -> str:
    """The Markdown bullet lines every RESULTS.md section starts with."""
    end = f", at end {load_end}" if load_end else ""
    return (f"- date: {meta['date']}; command: `{meta['command']}`\n"
            f"- device: {meta['device']}; CPU: {meta['cpu']}, {meta['cores']} cores visible; "
            f"load average at start {meta['load_avg']}{end}: "
            f"{load_note(max([meta['load_avg'], load_end or [0.0]], key=lambda x: x[0]), meta['cores'])}\n"
            f"- versions: jax {meta['jax']}, jaxlib {meta['jaxlib']}, numpy {meta['numpy']}, "
            f"Python {meta['python']}\n"
            + (f"- settings: {', '.join(f'{k}={v}' for k, v in meta['speed_settings'].items())}\n"
               if meta.get("speed_settings") else ""))


def time_calls(fn: Callable[[], object], reps: int, sync: Callable[[object], object] = jax.block_until_ready
               ) -> dict:
    """Warm-up once, then ``reps`` timed calls: median wall and CPU seconds."""
    sync(fn())
    walls, cpus = [], []
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        sync(fn())
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return dict(step_s=statistics.median(walls), cpu_s=statistics.median(cpus), reps=reps)


def compile_jit(jitted, *args, **kwargs):
    """Lower and compile ``jitted`` for ``args``: (compiled, seconds, peak bytes) where peak is
    XLA's own estimate (arguments + outputs + temporaries) from ``memory_analysis``."""
    t0 = time.perf_counter()
    compiled = jitted.lower(*args, **kwargs).compile()
    seconds = time.perf_counter() - t0
    peak = None
    try:
        m = compiled.memory_analysis()
        peak = int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                   - getattr(m, "alias_size_in_bytes", 0))
    except Exception:  # backend without memory analysis
        pass
    return compiled, seconds, peak


def device_peak_bytes() -> int | None:
    """Peak device memory where the backend reports it (GPU/TPU); None on CPU."""
    stats = jax.devices()[0].memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


def max_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_avg_text() -> str:
    """The load average as one string ('1.23 4.56 7.89'), as the JSON-lines records carry it."""
    return " ".join(f"{x:.2f}" for x in load_avg())


def emit_jsonl(record: dict, out: str | None) -> None:
    """Print ``record`` with the load average and the jax version as one JSON line, and append
    that line to ``out`` (a JSON-lines file several runs add to) when given."""
    line = json.dumps({**record, "load_avg": load_avg_text(), "jax": jax.__version__})
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


def write_json(path: str, obj) -> None:
    """Write ``obj`` as JSON atomically (temp file, then rename): a run killed mid-write keeps
    the previous file."""
    atomic_write(path, json.dumps(obj, indent=2))


def write_sections(sections: dict[str, str], path: str = RESULTS_MD) -> None:
    """Replace each '## title' section of RESULTS.md with the given text (or append it),
    leaving every other section alone. Atomic: a temp file, then rename."""
    current = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
    for title, text in sections.items():
        pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
        block = text.rstrip() + "\n\n"
        if pattern.search(current):
            current = pattern.sub(lambda _: block, current, count=1)
        else:
            current = current.rstrip() + "\n\n" + block
    atomic_write(path, current.rstrip() + "\n")
