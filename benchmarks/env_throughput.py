"""Throughput of the sound-matching environment: env steps/s for a vmapped batch of envs.

One timed call is ``jax.jit`` of a ``lax.scan`` over ``K`` steps of
``jax.vmap(env.step)`` (render + features + matching loss + reward + auto-reset), with random
two-head actions drawn inside the scan, so nothing leaves the device between steps. Reported
per number of envs: compile time (lower + compile, apart), steady-state seconds per call
(median of ``--reps`` after a warm-up), env steps/s and x realtime (audio seconds rendered
per second), XLA's buffer estimate (``compiled.memory_analysis()``: temporaries, arguments,
outputs), the device's peak bytes where the backend reports them (GPU/TPU), and the process'
peak resident memory (CPU; monotonic over the run). The target bank is built once (its build
time and size are reported too).

    python benchmarks/env_throughput.py                         # print a Markdown table
    python benchmarks/env_throughput.py --json out.json         # also write the rows as JSON
    python benchmarks/env_throughput.py --write-results         # also write RESULTS.md
    python benchmarks/env_throughput.py --quick                 # smoke run (1 and 16 envs)
    python benchmarks/env_throughput.py --calibrate             # curriculum threshold calibration

``--calibrate`` prints the median matching loss of held-out presets against the default start
and against N(0, sigma)-perturbed copies of themselves, per stage: the figures behind
``agents.curriculum.STAGES[*].threshold``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agents import curriculum as C  # noqa: E402
from agents import env as E  # noqa: E402
from agents.env import target_bank as TB  # noqa: E402
from benchmarks.common import (RESULTS_MD, compile_jit, device_peak_bytes, load_avg,  # noqa: E402
                               max_rss_mb, metadata, metadata_lines, time_calls, write_json,
                               write_sections)
from jaxsynth import params as P  # noqa: E402
from jaxsynth import features as F  # noqa: E402
from jaxsynth.features import FeatureConfig  # noqa: E402
from jaxsynth.losses import matching_loss  # noqa: E402
from jaxsynth.synth import SynthConfig  # noqa: E402

SECTION = "## Environment throughput"


def make_rollout(env: E.SynthMatchEnv, n_envs: int, k_steps: int):
    """jit(scan of k_steps vmapped env steps with random actions) -> (final state, sum reward)."""
    vstep = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def rollout(key, state, params):
        def body(carry, _):
            state, key = carry
            key, k_mod, k_delta, k_step = jax.random.split(key, 4)
            action = E.Action(jax.random.randint(k_mod, (n_envs,), 0, P.N_MODULES),
                              jax.random.uniform(k_delta, (n_envs, P.N_PARAMS), minval=-1.0, maxval=1.0))
            _, state, reward, _, _, _ = vstep(jax.random.split(k_step, n_envs), state, action, params)
            return (state, key), jnp.sum(reward)

        (state, _), rewards = jax.lax.scan(body, (state, key), None, length=k_steps)
        return state, jnp.sum(rewards)

    return jax.jit(rollout)


def time_envs(env: E.SynthMatchEnv, params: E.EnvParams, n_envs: int, k_steps: int, reps: int) -> dict:
    """Compile (apart), warm up, then the median of ``reps`` calls of ``k_steps`` env steps."""
    key = jax.random.key(n_envs)
    _, state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(jax.random.split(key, n_envs), params)
    load_before = load_avg()
    compiled, compile_s, peak = compile_jit(make_rollout(env, n_envs, k_steps), key, state, params)
    mem = compiled.memory_analysis()
    timing = time_calls(lambda: compiled(key, state, params), reps)
    steps = n_envs * k_steps
    return dict(n_envs=n_envs, k_steps=k_steps, reps=reps, compile_s=compile_s, call_s=timing["step_s"],
                cpu_s=timing["cpu_s"], step_ms=1e3 * timing["step_s"] / k_steps,
                env_steps_per_s=steps / timing["step_s"],
                x_realtime=steps * env.config.synth.duration_s / timing["step_s"],
                xla_peak_bytes=peak, xla_temp_bytes=getattr(mem, "temp_size_in_bytes", None),
                xla_argument_bytes=getattr(mem, "argument_size_in_bytes", None),
                xla_output_bytes=getattr(mem, "output_size_in_bytes", None),
                device_peak_bytes=device_peak_bytes(),
                host_max_rss_bytes=int(max_rss_mb() * 2**20),
                load_avg_before=load_before, load_avg_after=load_avg())


def time_bare_stft(n_envs: int, config: E.EnvConfig, reps: int) -> dict:
    """The floors the env step is compared with, in the same run, both jitted, the median of
    ``reps`` calls after a warm-up:

    * ``stft``: one ``n_fft``-point STFT (power, ``features.stft_power`` at the features'
      n_fft/hop) of ``n_envs`` clips in one pass, its spectrogram written out (the floor as the
      speed goal states it);
    * ``stft_reduced``: the same STFT in chunks of ``batch_chunk`` clips, each chunk's power
      reduced at once to one number per clip (sum of log power), so that no spectrogram buffer
      is allocated. The one-pass floor allocates ~2 GB per call at 4,096 clips (frames, complex
      spectrum, power), and on a VM where a page fault is expensive those faults are most of
      its time (RESULTS.md, "Page faults"); the env step never writes a spectrogram out, so this
      is the floor of the arithmetic it has to do for one resolution."""
    f = config.features
    audio = jax.random.normal(jax.random.key(1), (n_envs, f.num_samples), jnp.float32) * 0.1
    power = lambda a: F.stft_power(a, f.n_fft, f.hop_length, f.pad_mode, f.dft)
    chunk = math.gcd(n_envs, f.batch_chunk)
    reduced = lambda a: jax.lax.map(lambda c: jnp.log(power(c) + 1e-8).sum((1, 2)),
                                    a.reshape(-1, chunk, a.shape[-1])).reshape(n_envs)
    out = {}
    for name, fn in (("stft", power), ("stft_reduced", reduced)):
        compiled, _, _ = compile_jit(jax.jit(fn), audio)
        timing = time_calls(lambda: compiled(audio), reps)
        out.update({f"{name}_s": timing["step_s"], f"{name}_cpu_s": timing["cpu_s"]})
    return out


def mb(x) -> str:
    return "n/a" if x is None else f"{x / 2**20:,.0f}"


def markdown_table(rows: list[dict]) -> str:
    lines = ["| envs | K steps/call | compile (s) | step (ms) | CPU / wall | env steps/s | x realtime "
             "| bare STFT (ms) | step / STFT (CPU) | STFT, no output (ms) | step / that (CPU) | per env (us) "
             "| XLA temp (MB) | device peak (MB) | host max RSS (MB) | load avg (1/5/15 min) |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
             "| ---: | ---: | --- |"]
    for r in rows:
        floor = lambda name: (f"| {1e3 * r[name + '_s']:,.1f} | {r['step_ms'] / (1e3 * r[name + '_s']):.2f} "
                              f"({r['cpu_s'] / r['k_steps'] / r[name + '_cpu_s']:.2f}) "
                              if r.get(name + "_s") else "| - | - ")
        stft = floor("stft") + floor("stft_reduced")
        lines.append(f"| {r['n_envs']} | {r['k_steps']} | {r['compile_s']:.1f} | {r['step_ms']:,.1f} "
                     f"| {r['cpu_s'] / r['call_s']:.2f} | {r['env_steps_per_s']:,.0f} | {r['x_realtime']:,.0f} "
                     + stft + f"| {1e3 * r['step_ms'] / r['n_envs']:,.0f} "
                     f"| {mb(r['xla_temp_bytes'])} | {mb(r['device_peak_bytes'])} "
                     f"| {mb(r['host_max_rss_bytes'])} | {' '.join(map(str, r['load_avg_after']))} |")
    return "\n".join(lines)


def calibrate(config: E.EnvConfig, seed: int, n: int, sigmas: tuple[float, ...]) -> list[dict]:
    """Median held-out loss vs the default start and vs perturbed copies, per stage."""
    render_key = jax.random.fold_in(jax.random.key(seed), 3)
    pair = jax.jit(jax.vmap(lambda a, b: matching_loss(a, b, config.loss_weights).total))
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(C.N_STAGES):
        target = C.heldout_presets(seed, s, n)
        editable = np.asarray(P.param_mask(C.stage_module_masks()[s]))
        _, target_f = TB.render_features(target, render_key, config)
        row = dict(stage=s, name=C.STAGES[s].name, threshold=C.STAGES[s].threshold)
        for sigma in (None,) + tuple(sigmas):
            if sigma is None:
                x = np.broadcast_to(P.DEFAULT_PARAMS01, target.shape).copy()
            else:
                x = np.clip(target + editable * rng.normal(0.0, sigma, target.shape), 0.0, 1.0)
                x = np.asarray(P.snap(x.astype(np.float32)))
            _, x_f = TB.render_features(x, render_key, config)
            loss = np.asarray(pair(x_f, target_f))
            row["default" if sigma is None else f"sigma={sigma}"] = (
                float(np.percentile(loss, 25)), float(np.median(loss)), float(np.percentile(loss, 75)))
        rows.append(row)
        print(row, flush=True)
    return rows


def main(argv=None) -> dict | list:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 64, 256, 1024, 4096])
    parser.add_argument("--steps-per-call", type=int, default=0,
                        help="K steps per timed call; 0: 16 up to 256 envs, 4 at 1024, 1 above")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--bank-size", type=int, default=E.EnvConfig.bank_size)
    parser.add_argument("--init", choices=["default", "random"], default="default")
    parser.add_argument("--sample-rate", type=int, default=22050)
    parser.add_argument("--duration-s", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-stft", action="store_true",
                        help="skip the bare n_fft-point STFT of the same clips (the step's yardstick)")
    parser.add_argument("--batch-chunk", type=int, default=FeatureConfig.batch_chunk,
                        help="FeatureConfig.batch_chunk (0: analyse the whole batch in one pass)")
    parser.add_argument("--mrstft-sizes", type=int, nargs="+", default=list(FeatureConfig.mrstft_fft_sizes),
                        help="FeatureConfig.mrstft_fft_sizes (the MR-STFT resolutions; fewer change "
                             "the loss: for speed studies only)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: envs 1 and 16, bank 8, 2 steps per call, 2 reps")
    parser.add_argument("--json", metavar="PATH", help="write the rows (and the setup) as JSON")
    parser.add_argument("--results-md", default=RESULTS_MD, help="the RESULTS.md to write")
    parser.add_argument("--write-results", action="store_true",
                        help=f"write the table to the '{SECTION}' section of benchmarks/RESULTS.md")
    parser.add_argument("--calibrate", action="store_true",
                        help="print the curriculum threshold calibration instead of timing")
    parser.add_argument("--calibrate-n", type=int, default=32)
    args = parser.parse_args(argv)
    if args.quick:
        args.envs, args.bank_size, args.steps_per_call, args.reps = [1, 16], 8, 2, 2
    if any(n < 1 for n in args.envs) or args.reps < 1 or args.steps_per_call < 0 or args.bank_size < 1:
        parser.error("--envs, --reps and --bank-size must be >= 1, --steps-per-call >= 0")

    config = E.EnvConfig(
        synth=SynthConfig(sample_rate=args.sample_rate, duration_s=args.duration_s),
        features=FeatureConfig(sample_rate=args.sample_rate, duration_s=args.duration_s,
                               batch_chunk=args.batch_chunk or None,
                               mrstft_fft_sizes=tuple(args.mrstft_sizes)),
        bank_size=args.bank_size, init=args.init, build_chunk=min(E.EnvConfig.build_chunk, args.bank_size))
    if args.calibrate:
        rows = calibrate(config, args.seed, args.calibrate_n, (0.02, 0.05, 0.1, 0.2))
        if args.json:
            write_json(args.json, rows)
        return rows

    meta = metadata(sys.argv[1:] if argv is None else argv, "benchmarks/env_throughput.py")
    env = E.SynthMatchEnv(config)
    t0 = time.perf_counter()
    bank = jax.block_until_ready(TB.build_bank(jax.random.key(args.seed), config))
    build_s = time.perf_counter() - t0
    params = env.make_params(bank, stage=0)
    meta.update(bank_build_s=build_s, bank_bytes=TB.bank_bytes(bank),
                bytes_per_target=TB.bytes_per_target(config), bank_size=args.bank_size,
                n_stages=C.N_STAGES, init=args.init, sample_rate=args.sample_rate,
                duration_s=args.duration_s, obs_dim=env.observation_size)
    print(f"bank: {C.N_STAGES} x {args.bank_size} targets, {meta['bank_bytes'] / 2**20:.0f} MB "
          f"({meta['bytes_per_target'] / 1e3:.0f} KB/target), built in {build_s:.1f} s (load {load_avg()})",
          flush=True)

    rows = []
    for n in args.envs:
        k = args.steps_per_call or (16 if n <= 256 else 4 if n <= 1024 else 1)
        row = time_envs(env, params, n, k, args.reps)
        if not args.no_stft:
            row.update(time_bare_stft(n, config, args.reps))
        row["batch"] = n  # the common key run_all plots against
        rows.append(row)
        print(f"{n:5d} envs x {k:2d} steps: {row['step_ms']:10.1f} ms/step  {row['env_steps_per_s']:9.0f} "
              f"steps/s  compile {row['compile_s']:.1f} s  XLA temp {mb(row['xla_temp_bytes'])} MB  "
              f"load {row['load_avg_after']}"
              + (f"  bare STFT {1e3 * row['stft_s']:.1f} ms: step/STFT {row['step_ms'] / (1e3 * row['stft_s']):.2f}"
                 f" (CPU {row['cpu_s'] / k / row['stft_cpu_s']:.2f}); without its output "
                 f"{1e3 * row['stft_reduced_s']:.1f} ms: {row['step_ms'] / (1e3 * row['stft_reduced_s']):.2f}"
                 if "stft_s" in row else ""), flush=True)
        if args.json:  # rewritten after every row, so a long run that is killed keeps what it had
            write_json(args.json, dict(setup=meta, rows=rows))

    header = (f"{SECTION}\n\n"
              f"Full env step (render + features + matching loss + reward + auto-reset) of "
              f"`jax.vmap(SynthMatchEnv.step)` inside a jitted `lax.scan` of K steps with random actions; "
              f"{args.duration_s} s clips at {args.sample_rate} Hz, default analysis (log-mel 64 x "
              f"{config.num_frames}, MR-STFT {list(config.features.mrstft_fft_sizes)}), obs dim "
              f"{env.observation_size}; median of {args.reps} calls after a warm-up, compile time apart. "
              f"CPU / wall = process CPU seconds per wall second (about the cores this process got). "
              f"Bare STFT: one {config.features.n_fft}-point STFT (hop {config.features.hop_length}) of the "
              f"same number of clips, one pass, measured in the same run; step / STFT by wall time "
              f"(by process CPU time in brackets). STFT, no output: the same STFT in chunks of "
              f"{config.features.batch_chunk} clips, each reduced at once to a number per clip, so "
              f"that no spectrogram is allocated (the env step allocates none either). Features analysed in chunks of "
              f"{config.features.batch_chunk} clips (`FeatureConfig.batch_chunk`). "
              f"Target bank: {C.N_STAGES} stages x {args.bank_size} targets = "
              f"{meta['bank_bytes'] / 2**20:.0f} MB ({meta['bytes_per_target'] / 1e3:.0f} KB per target), "
              f"built in {build_s:.1f} s.\n\n" + metadata_lines(meta, load_avg()))
    table = markdown_table(rows)
    print("\n" + header + "\n" + table)
    if args.write_results:
        write_sections({SECTION: header + "\n" + table}, args.results_md)
        print(f"\nwrote section '{SECTION}' to {args.results_md}")
    return dict(setup=meta, rows=rows)


if __name__ == "__main__":
    main()
