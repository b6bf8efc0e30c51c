"""Render throughput of the jaxsynth voice, side by side with torchsynth and SynthAX, and floors.

Per sample rate and batch size (0.5 s clips by default), for each measured system: compile
time (lower + compile, apart), steady-state seconds per batch (median of ``--reps`` calls
after a warm-up), process CPU seconds per batch, x realtime (audio seconds per wall second),
samples/s, XLA's peak-memory estimate (``compiled.memory_analysis()``: arguments + outputs +
temporaries) and the process' peak RSS (monotonic over the run).

Systems and what each computes per sound:

* ``jaxsynth``: ``render_batch`` with every module active at random presets (unison at up to
  4 voices): 2 morphing PolyBLEP oscillators x 4 unison voices, noise, a resonant TPT SVF
  (LP/BP/HP) with its own ADSR, key tracking and LFO modulation, tanh drive, amp ADSR, LFO
  vibrato/tremolo. Modes: ``render``; ``render+features`` (``features.analyze``: loudness,
  log-mel, MFCC, centroid, the default 3 MR-STFT resolutions); ``render+features+loss`` (plus
  ``losses.matching_loss`` against cached target features).
* ``torchsynth`` (if importable): ``torchsynth.synth.Voice`` forward under ``torch.no_grad``:
  keyboard, 2 VCOs (sine; square/saw) , noise, 2 LFOs, 6 ADSRs, modulation mixer, VCA; no filter,
  no unison. torchsynth 1.0.2 predates setuptools 81 and pytorch-lightning 2: two import shims
  (``pkg_resources.resource_string``, ``pytorch_lightning.core.lightning``) are installed
  below; the synth code itself is unchanged.
* ``synthax`` (if importable): ``synthax.synth.Voice`` (a JAX port of the torchsynth Voice:
  same modules, no filter, no unison), ``jax.jit(voice.apply)`` with fixed parameters.
* floors: ``numpy-fill`` (write B x T float32 into a preallocated array: the memory floor),
  ``jax-materialize`` (a jitted ``zeros + 1`` of shape (B, T): the same write including XLA's
  output allocation), ``stft-only`` (just the STFTs that ``analyze`` takes: n_fft/hop of the
  features plus the MR-STFT resolutions, as power spectra).

    python benchmarks/render_throughput.py                           # full grid, Markdown table
    python benchmarks/render_throughput.py --quick                   # batch 1, 64; 22.05 kHz
    python benchmarks/render_throughput.py --json out.json --write-results
    python benchmarks/render_throughput.py --profile --batches 1024  # kernel time per HLO op
    python benchmarks/render_throughput.py --cpu-devices 2           # also: the batch spread over 2 CPU devices

``--cpu-devices N`` starts JAX with N CPU devices and adds ``render-spread`` rows: ours as
``render_batch(..., spread=True)`` runs in such a process (``synth.render_batch_spread``: one
part of the batch per device) and SynthAX's Voice spread the same way, so both get the cores the
same way.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import (RESULTS_MD, compile_jit, load_avg, max_rss_mb, metadata,  # noqa: E402
                               metadata_lines, time_calls, write_json, write_sections)
from jaxsynth import features as F  # noqa: E402
from jaxsynth import losses as L  # noqa: E402
from jaxsynth import params as P  # noqa: E402
from jaxsynth.synth import SynthConfig, local_cpu_devices, render_batch_jit, render_batch_spread  # noqa: E402

MODES = ("render", "render+features", "render+features+loss")
SPREAD = "render-spread"  # the batch split over the CPU devices, one part per device (--cpu-devices)


# ----------------------------------------------------------------------------- jaxsynth


def jaxsynth_inputs(batch: int, cfg: SynthConfig, seed: int = 0):
    key = jax.random.key(seed)
    params01 = P.sample_params01(key, np.ones(P.N_MODULES, bool), shape=(batch,))
    keys = jax.random.split(jax.random.fold_in(key, 1), batch)
    full = lambda v: jnp.full((batch,), v, jnp.float32)
    return params01, keys, full(60.0), full(1.0), full(cfg.default_note_length_s)


def time_jaxsynth(mode: str, batch: int, cfg: SynthConfig, reps: int) -> dict:
    """``render_batch_jit`` is what ``render_batch`` calls after validating its inputs on the
    host; timing it directly keeps the host-side checks out of the figure."""
    args = jaxsynth_inputs(batch, cfg)
    fcfg = F.FeatureConfig(sample_rate=cfg.sample_rate, duration_s=cfg.duration_s)
    if mode in ("render", SPREAD):  # SPREAD: render_batch(..., spread=True) over the CPU devices
        render = render_batch_spread if mode == SPREAD else render_batch_jit
        fn = jax.jit(lambda p, k, n, v, nl: render(p, k, cfg, n, v, nl))
        call_args = args
    else:
        target_audio = jax.jit(lambda p, k, n, v, nl: render_batch_jit(p, k, cfg, n, v, nl))(
            *jaxsynth_inputs(batch, cfg, seed=1))
        target = jax.jit(F.analyze, static_argnums=1)(target_audio, fcfg)

        def fn_(p, k, n, v, nl, tgt):
            feats = F.analyze(render_batch_jit(p, k, cfg, n, v, nl), fcfg)
            if mode == "render+features":
                return feats
            return L.matching_loss(feats, tgt).total

        fn = jax.jit(fn_)
        call_args = args + (target,)
    compiled, compile_s, peak = compile_jit(fn, *call_args)
    timing = time_calls(lambda: compiled(*call_args), reps)
    return dict(system="jaxsynth", mode=mode, compile_s=compile_s, peak_bytes=peak, **timing)


# ----------------------------------------------------------------------------- peers


def _install_torchsynth_shims() -> None:
    """torchsynth 1.0.2 imports ``pkg_resources`` (gone from setuptools >= 81) for its preset
    files and ``pytorch_lightning.core.lightning`` (moved in pytorch-lightning 2). Both only
    provide names; the synthesis code is untouched."""
    if "pkg_resources" not in sys.modules:
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            def resource_string(package: str, name: str) -> bytes:
                pkg = package.rpartition(".")[0] or package
                return importlib.resources.files(pkg).joinpath(name).read_bytes()
            sys.modules["pkg_resources"] = types.SimpleNamespace(resource_string=resource_string)
    try:
        import pytorch_lightning.core.lightning  # noqa: F401
    except ImportError:
        try:
            import pytorch_lightning as pl
        except ImportError:
            return
        shim = types.ModuleType("pytorch_lightning.core.lightning")
        shim.LightningModule = pl.LightningModule
        sys.modules["pytorch_lightning.core.lightning"] = shim


def peer_status() -> dict[str, str]:
    """'ok' or the reason a peer cannot run here."""
    status = {}
    try:
        _install_torchsynth_shims()
        import torchsynth.synth  # noqa: F401
        import torchsynth  # noqa: F401
        status["torchsynth"] = "ok"
    except Exception as e:  # ImportError and friends: report, do not fail the run
        status["torchsynth"] = f"not importable: {type(e).__name__}: {e}"
    try:
        import synthax.synth  # noqa: F401
        status["synthax"] = "ok"
    except Exception as e:
        status["synthax"] = f"not importable: {type(e).__name__}: {e}"
    return status


def peer_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for name in ("torchsynth", "synthax", "torch"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def time_torchsynth(batch: int, cfg: SynthConfig, reps: int) -> dict:
    import time

    import torch
    from torchsynth.config import SynthConfig as TSConfig
    from torchsynth.synth import Voice

    voice = Voice(TSConfig(batch_size=batch, sample_rate=cfg.sample_rate,
                           buffer_size_seconds=cfg.duration_s, reproducible=False))
    t0 = time.perf_counter()
    with torch.no_grad():
        voice()  # first call: lazy set-up, the analogue of compile
    first_s = time.perf_counter() - t0

    def call():
        with torch.no_grad():
            return voice()[0]

    timing = time_calls(call, reps, sync=lambda x: x)
    return dict(system="torchsynth", mode="render", compile_s=first_s, peak_bytes=None, **timing)


def time_synthax(batch: int, cfg: SynthConfig, reps: int, spread: bool = False) -> dict:
    """SynthAX's Voice at ``batch``; with ``spread``, the same spread over the CPU devices as
    ours (``shard_map``: each device renders batch / devices sounds of one Voice, so the peer
    gets the same cores the same way)."""
    from synthax.config import SynthConfig as SXConfig
    from synthax.synth import Voice

    devices = local_cpu_devices() if spread else []
    voice = Voice(SXConfig(batch_size=-(-batch // max(len(devices), 1)), sample_rate=cfg.sample_rate,
                           buffer_size_seconds=cfg.duration_s))
    params = voice.init(jax.random.PRNGKey(0))
    fn = voice.apply
    if spread:
        mesh = jax.sharding.Mesh(np.array(devices), ("cpu",))
        fn = jax.shard_map(voice.apply, mesh=mesh, in_specs=jax.sharding.PartitionSpec(),
                           out_specs=jax.sharding.PartitionSpec("cpu"), check_vma=False)
    compiled, compile_s, peak = compile_jit(jax.jit(fn), params)
    timing = time_calls(lambda: compiled(params), reps)
    return dict(system="synthax", mode=SPREAD if spread else "render", compile_s=compile_s,
                peak_bytes=peak, **timing)


# ----------------------------------------------------------------------------- floors


def time_floors(batch: int, cfg: SynthConfig, reps: int) -> list[dict]:
    T = cfg.num_samples
    out = []
    buf = np.empty((batch, T), np.float32)
    out.append(dict(system="floor", mode="numpy-fill", compile_s=0.0, peak_bytes=buf.nbytes,
                    **time_calls(lambda: buf.fill(1.0), reps, sync=lambda x: x)))
    one = jnp.float32(1.0)
    compiled, c_s, peak = compile_jit(jax.jit(lambda s: jnp.zeros((batch, T), jnp.float32) + s), one)
    out.append(dict(system="floor", mode="jax-materialize", compile_s=c_s, peak_bytes=peak,
                    **time_calls(lambda: compiled(one), reps)))
    fcfg = F.FeatureConfig(sample_rate=cfg.sample_rate, duration_s=cfg.duration_s)
    resolutions = ((fcfg.n_fft, fcfg.hop_length),) + tuple(
        (n, n // fcfg.mrstft_hop_divisor) for n in fcfg.mrstft_fft_sizes)
    resolutions = tuple(dict.fromkeys(resolutions))  # analyze shares the identical one

    def stfts(audio):
        return [F.stft_power(audio, n, h, fcfg.pad_mode, fcfg.dft) for n, h in resolutions]

    audio = jax.random.normal(jax.random.key(0), (batch, T), jnp.float32) * 0.1
    compiled, c_s, peak = compile_jit(jax.jit(stfts), audio)
    out.append(dict(system="floor", mode="stft-only", compile_s=c_s, peak_bytes=peak,
                    **time_calls(lambda: compiled(audio), reps)))
    return out


# ----------------------------------------------------------------------------- profile


def profile_kernels(batch: int, cfg: SynthConfig, calls: int = 3, top: int = 15) -> list[dict]:
    """Where the render's time goes: XLA kernel ("thunk") time per HLO op, from a
    ``jax.profiler`` trace of ``calls`` calls (after a warm-up), averaged per call, largest
    first. The profiler slows every kernel by a similar factor: read proportions, not ms.
    An op name repeated ``count`` times per call is a kernel inside a loop; a loop's own row
    (``while.N``) spans the kernels inside it, so shares add up to more than 100 %."""
    import collections
    import glob
    import gzip
    import tempfile

    fn = jax.jit(lambda p, k, n, v, nl: render_batch_jit(p, k, cfg, n, v, nl))
    args = jaxsynth_inputs(batch, cfg)
    jax.block_until_ready(fn(*args))
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            for _ in range(calls):
                jax.block_until_ready(fn(*args))
        with gzip.open(glob.glob(os.path.join(d, "**", "*perfetto_trace.json.gz"), recursive=True)[0]) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    total_us, count = collections.Counter(), collections.Counter()
    for e in events:
        name = e.get("name", "")
        if e.get("ph") == "X" and not name.startswith(("$", "ThunkExecutor", "end: ")):
            total_us[name] += e["dur"]
            count[name] += 1
    whole = sum(total_us.values())
    return [dict(op=name, ms_per_call=t / calls / 1e3, count_per_call=count[name] // calls,
                 share=t / whole) for name, t in total_us.most_common(top)]


# ----------------------------------------------------------------------------- driver


def finish(row: dict, batch: int, cfg: SynthConfig) -> dict:
    audio_s = batch * cfg.duration_s
    row.update(batch=batch, sample_rate=cfg.sample_rate, duration_s=cfg.duration_s,
               x_realtime=audio_s / row["step_s"], samples_per_s=batch * cfg.num_samples / row["step_s"],
               x_realtime_cpu=audio_s / row["cpu_s"] if row["cpu_s"] > 0 else None,
               max_rss_mb=max_rss_mb(), load_avg=load_avg())
    return row


def fmt_bytes(b) -> str:
    return "-" if b is None else f"{b / 2**20:,.0f}"


def table(rows: list[dict]) -> str:
    lines = ["| sample rate | batch | system | mode | compile (s) | step (ms, median) | CPU (ms) "
             "| x realtime | x rt per CPU-s | samples/s | XLA peak (MiB) | max RSS (MiB) | load (1 min) |",
             "| ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(
            f"| {r['sample_rate']} | {r['batch']} | {r['system']} | {r['mode']} | {r['compile_s']:.2f} "
            f"| {1e3 * r['step_s']:,.1f} | {1e3 * r['cpu_s']:,.1f} | {r['x_realtime']:,.0f} "
            f"| {r['x_realtime_cpu'] or float('nan'):,.0f} "
            f"| {r['samples_per_s']:,.3g} | {fmt_bytes(r['peak_bytes'])} | {r['max_rss_mb']:,.0f} "
            f"| {r.get('load_avg', [float('nan')])[0]:.2f} |")
    return "\n".join(lines)


def ratios(rows: list[dict]) -> str:
    """jaxsynth render x-realtime divided by each peer's, per sample rate and batch; in
    brackets the same ratio by process CPU time (robust to other jobs on a shared machine).
    A ``render-spread`` row (several CPU devices) is set against the peer's faster of its
    spread row (SynthAX) and its plain render, so that spreading never flatters the ratio."""
    by = {(r["system"], r["mode"], r["sample_rate"], r["batch"]): r for r in rows}
    lines = ["| sample rate | batch | jaxsynth mode | jaxsynth x rt | torchsynth x rt | ours / torchsynth (CPU) "
             "| synthax x rt | ours / synthax (CPU) |", "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for (system, mode, sr, b), r in by.items():
        if system != "jaxsynth" or mode not in ("render", SPREAD):
            continue
        cells = [f"{sr}", f"{b}", mode, f"{r['x_realtime']:,.0f}"]
        for peer in ("torchsynth", "synthax"):
            own = [by[k] for k in {(peer, mode, sr, b), (peer, "render", sr, b)} if k in by]
            p = max(own, key=lambda x: x["x_realtime"]) if own else None
            cells += ([f"{p['x_realtime']:,.0f}", f"{r['x_realtime'] / p['x_realtime']:.2f} "
                       f"({p['cpu_s'] / max(r['cpu_s'], 1e-9):.2f})"] if p else ["-", "-"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 256, 1024, 4096])
    parser.add_argument("--sample-rates", type=int, nargs="+", default=[22050, 44100])
    parser.add_argument("--duration-s", type=float, default=0.5)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--feature-max-batch", type=int, default=4096,
                        help="skip the features/loss modes above this batch")
    parser.add_argument("--peers", choices=["auto", "none"], default="auto",
                        help="auto: time torchsynth/synthax when importable")
    parser.add_argument("--no-floors", action="store_true")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--cpu-devices", type=int, default=1,
                        help="CPU devices to start JAX with (jax_num_cpu_devices); above 1 also "
                             "times the render spread over them (ours and SynthAX's), as "
                             "render_batch(..., spread=True) runs it there")
    parser.add_argument("--quick", action="store_true", help="batches 1 and 64 at 22.05 kHz, 3 reps")
    parser.add_argument("--json", metavar="PATH", help="write setup and rows as JSON (after every row)")
    parser.add_argument("--results-md", default=RESULTS_MD, help="the RESULTS.md to write")
    parser.add_argument("--from-json", metavar="PATH",
                        help="do not measure: print (and with --write-results write) the tables of a saved run")
    parser.add_argument("--write-results", action="store_true",
                        help="replace the '## Render throughput' and '## Floors' sections of RESULTS.md")
    parser.add_argument("--profile", action="store_true",
                        help="instead of timing: XLA kernel time per HLO op of the render at each "
                             "--batches (jax.profiler trace; proportions, not absolute ms)")
    args = parser.parse_args(argv)
    if args.cpu_devices < 1:
        parser.error(f"--cpu-devices must be >= 1, got {args.cpu_devices}")
    if args.cpu_devices > 1:  # before anything starts JAX's CPU backend
        jax.config.update("jax_num_cpu_devices", args.cpu_devices)
    if args.quick:
        args.batches, args.sample_rates, args.reps = [1, 64], [22050], 3
    if args.profile:
        out = {}
        for batch in args.batches:
            rows = profile_kernels(batch, SynthConfig(sample_rate=args.sample_rates[0], duration_s=args.duration_s))
            out[batch] = rows
            print(f"\nbatch {batch}: kernel time per render call (load {load_avg()})")
            for r in rows:
                print(f"  {r['ms_per_call']:9.2f} ms  {100 * r['share']:5.1f} %  x{r['count_per_call']:<6d} {r['op']}")
        if args.json:
            write_json(args.json, out)
        return out

    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        meta, rows = saved["setup"], saved["rows"]
        status = meta["peers"]
        args.reps = rows[0]["reps"] if rows else args.reps
        args.duration_s = rows[0]["duration_s"] if rows else args.duration_s
        args.sample_rates, args.batches = [], []  # nothing to measure
    else:
        meta = metadata(sys.argv[1:] if argv is None else argv, "benchmarks/render_throughput.py")
        status = peer_status() if args.peers == "auto" else {"torchsynth": "off", "synthax": "off"}
        meta.update(peers=status, peer_versions=peer_versions(), cpu_devices=args.cpu_devices)
        rows = []
    print(f"# {meta['device']}, jax {meta['jax']}; peers: {status}", flush=True)

    def emit(row):
        rows.append(row)
        print(f"{row['sample_rate']:6d} Hz  batch {row['batch']:5d}  {row['system']:10s} {row['mode']:22s}"
              f" {1e3 * row['step_s']:10.1f} ms  {row['x_realtime']:9,.0f}x rt"
              f"  (compile {row['compile_s']:.2f} s, CPU {1e3 * row['cpu_s']:.0f} ms)", flush=True)
        if args.json:
            write_json(args.json, dict(setup=meta, rows=rows))

    for sr in args.sample_rates:
        cfg = SynthConfig(sample_rate=sr, duration_s=args.duration_s)
        for batch in args.batches:
            for mode in args.modes:
                if mode != "render" and batch > args.feature_max_batch:
                    continue
                emit(finish(time_jaxsynth(mode, batch, cfg, args.reps), batch, cfg))
            spread = args.cpu_devices > 1 and "render" in args.modes
            if spread:
                emit(finish(time_jaxsynth(SPREAD, batch, cfg, args.reps), batch, cfg))
            if status.get("torchsynth") == "ok":
                emit(finish(time_torchsynth(batch, cfg, args.reps), batch, cfg))
            if status.get("synthax") == "ok":
                emit(finish(time_synthax(batch, cfg, args.reps), batch, cfg))
                if spread:
                    emit(finish(time_synthax(batch, cfg, args.reps, spread=True), batch, cfg))
            if not args.no_floors:
                for row in time_floors(batch, cfg, args.reps):
                    emit(finish(row, batch, cfg))

    main_rows = [r for r in rows if r["system"] != "floor"]
    floor_rows = [r for r in rows if r["system"] == "floor"]
    print("\n" + table(main_rows) + "\n\n" + ratios(rows))
    if floor_rows:
        print("\n" + table(floor_rows))
    load_end = rows[-1].get("load_avg") if rows else None
    if args.write_results:
        peers = "; ".join(f"{k} {meta['peer_versions'].get(k, '')}: {v}" for k, v in status.items())
        head = (f"Median of {args.reps} calls after a warm-up, {args.duration_s} s clips, compile apart; "
                f"jaxsynth at random presets with every module active. Peers: {peers}. What each "
                "system computes: see the docstring of benchmarks/render_throughput.py.\n\n"
                + metadata_lines(meta, load_end))
        sections = {"## Render throughput": "## Render throughput\n\n" + head + "\n" + table(main_rows)
                    + "\n\nOur render x-realtime over each peer's (same batch, length, sample rate, "
                    "same run); in brackets the ratio of process CPU time per batch, the fairer "
                    "figure when other jobs share the cores (check the load average above):\n\n"
                    + ratios(rows)}
        if floor_rows:
            sections["## Floors"] = (
                "## Floors\n\nWhat the hardware allows for the same output: `numpy-fill` writes "
                "B x T float32 into a preallocated array, `jax-materialize` is a jitted zeros+1 "
                "of (B, T) (XLA allocates the output each call), `stft-only` is just the STFTs "
                "that `features.analyze` takes (features' n_fft/hop plus the MR-STFT sizes).\n\n"
                + metadata_lines(meta, load_end) + "\n" + table(floor_rows))
        write_sections(sections, args.results_md)
        print("\nwrote", ", ".join(sections), "to", args.results_md)
    return dict(setup=meta, rows=rows)


if __name__ == "__main__":
    main()
