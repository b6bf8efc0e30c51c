"""One short run that characterises whatever device JAX sees: render, env step, training
fusion and CREPE cost, in one process, under a wall-clock budget (8 minutes by default).

Parts, each measured in the same run so that every ratio compares like with like:

* ``render``: ``render_batch`` (every module on) x-realtime at batch 1 / 64 / 1,024 / 4,096 /
  16,384 next to SynthAX 0.2.2's ``Voice`` at the same batch (``render_throughput.py``'s
  timing code), with the ratio ours / SynthAX;
* ``env``: the full env step (render + features + loss + reward + auto-reset of
  ``jax.vmap(SynthMatchEnv.step)``, ``env_throughput.py``) at 1,024 / 4,096 / 16,384 envs, next
  to one bare ``n_fft``-point STFT of as many clips (the step's yardstick) and per-env cost;
* ``train``: fused training (one jitted ``lax.scan`` of K env steps + updates) vs the host
  loop over the same one-step program (``train_throughput.py``);
* ``crepe``: CREPE-tiny in the graph (resample, frame, network, embedding and pitch-posterior
  distances against a cached target) per env step, if its weights are installed.

``--cpu-reduced`` runs the same parts at sizes a 2-core CPU finishes in the budget (render up
to 1,024, env 256 and 1,024 envs, train 64 envs, CREPE 16 envs); it is chosen automatically
when JAX sees only a CPU, and the section says so. Sizes that would start after the budget is
spent are skipped and listed as skipped (never extrapolated). Feature analysis runs in one pass
on an accelerator (``FeatureConfig.batch_chunk=None``) and in chunks of 64 clips on a CPU.

    python benchmarks/device_suite.py                       # writes RESULTS.md + JSON
    python benchmarks/run_all.py --device-suite             # the same
    python benchmarks/device_suite.py --cpu-reduced --parts render env --budget-s 240
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import traceback

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import (RESULTS_MD, load_avg, metadata, metadata_lines,  # noqa: E402
                               write_json, write_sections)

SECTION = "## Device suite"
PARTS = ("render", "env", "train", "crepe")
DEFAULT_JSON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "device_suite.json")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What each part measures; ``full`` for an accelerator, ``cpu_reduced`` for a small CPU."""

    render_batches: tuple[int, ...]
    env_envs: tuple[int, ...]
    train_envs: tuple[int, ...]
    train_steps: int
    train_updates: int
    crepe_envs: tuple[int, ...]
    reps: int
    batch_chunk: int | None


FULL = Sizes(render_batches=(1, 64, 1024, 4096, 16384), env_envs=(1024, 4096, 16384),
             train_envs=(1024, 4096), train_steps=8, train_updates=16, crepe_envs=(1024, 4096),
             reps=3, batch_chunk=None)
CPU_REDUCED = Sizes(render_batches=(1, 64, 1024), env_envs=(256, 1024), train_envs=(64,),
                    train_steps=4, train_updates=4, crepe_envs=(16,), reps=3, batch_chunk=64)


class Budget:
    """Wall-clock budget shared by all parts: a size starts only if time is left."""

    def __init__(self, seconds: float):
        self.deadline = time.perf_counter() + seconds

    def left_s(self) -> float:
        return self.deadline - time.perf_counter()


def _skip(part: str, size: int, why: str) -> dict:
    return dict(part=part, size=size, skipped=why)


def render_part(sizes: Sizes, budget: Budget, min_left_s: float) -> list[dict]:
    """Ours and SynthAX at each batch, x-realtime and the ratio, same run."""
    from benchmarks.render_throughput import finish, peer_status, time_jaxsynth, time_synthax
    from jaxsynth.synth import SynthConfig

    cfg = SynthConfig()
    have_synthax = peer_status().get("synthax") == "ok"
    rows = []
    for b in sizes.render_batches:
        if budget.left_s() < min_left_s:
            rows.append(_skip("render", b, "budget spent"))
            continue
        ours = finish(time_jaxsynth("render", b, cfg, sizes.reps), b, cfg)
        row = dict(part="render", size=b, ours_x_rt=ours["x_realtime"], ours_s=ours["step_s"],
                   ours_cpu_s=ours["cpu_s"], ours_compile_s=ours["compile_s"], load_avg=load_avg())
        if have_synthax:
            peer = finish(time_synthax(b, cfg, sizes.reps), b, cfg)
            row.update(synthax_x_rt=peer["x_realtime"], synthax_s=peer["step_s"],
                       synthax_cpu_s=peer["cpu_s"], ratio=ours["x_realtime"] / peer["x_realtime"],
                       ratio_cpu=peer["cpu_s"] / max(ours["cpu_s"], 1e-9))
        rows.append(row)
        print(f"render {b:6d}: ours {row['ours_x_rt']:9,.0f}x rt"
              + (f", SynthAX {row['synthax_x_rt']:9,.0f}x rt, ratio {row['ratio']:.2f}" if have_synthax else ""),
              flush=True)
    return rows


def env_part(sizes: Sizes, budget: Budget, min_left_s: float) -> list[dict]:
    """Full env step and a bare STFT of as many clips, same run."""
    from agents import env as E
    from agents.env import target_bank as TB
    from benchmarks.env_throughput import time_bare_stft, time_envs
    from jaxsynth.features import FeatureConfig

    config = E.EnvConfig(features=FeatureConfig(batch_chunk=sizes.batch_chunk), bank_size=32,
                         build_chunk=32)
    env = E.SynthMatchEnv(config)
    params = env.make_params(jax.block_until_ready(TB.build_bank(jax.random.key(0), config)), stage=0)
    rows = []
    for n in sizes.env_envs:
        if budget.left_s() < min_left_s:
            rows.append(_skip("env", n, "budget spent"))
            continue
        r = time_envs(env, params, n, 1, sizes.reps)
        r.update(time_bare_stft(n, config, sizes.reps))
        row = dict(part="env", size=n, step_ms=r["step_ms"], step_cpu_ms=1e3 * r["cpu_s"],
                   stft_ms=1e3 * r["stft_s"], stft_cpu_ms=1e3 * r["stft_cpu_s"],
                   step_over_stft=r["step_ms"] / (1e3 * r["stft_s"]),
                   step_over_stft_cpu=r["cpu_s"] / r["stft_cpu_s"],
                   stft_reduced_ms=1e3 * r["stft_reduced_s"],
                   step_over_stft_reduced=r["step_ms"] / (1e3 * r["stft_reduced_s"]),
                   us_per_env=1e3 * r["step_ms"] / n,
                   compile_s=r["compile_s"], xla_temp_bytes=r["xla_temp_bytes"], load_avg=load_avg())
        rows.append(row)
        print(f"env {n:6d}: step {row['step_ms']:9.1f} ms, bare STFT {row['stft_ms']:8.1f} ms, "
              f"ratio {row['step_over_stft']:.2f}, {row['us_per_env']:.0f} us/env", flush=True)
    return rows


def train_part(sizes: Sizes, budget: Budget, min_left_s: float) -> list[dict]:
    """Fused vs host-loop training (``train_throughput.bench``)."""
    from agents.sac import run as T
    from agents.sac.config import TrainConfig
    from benchmarks.train_throughput import bench

    setup = T.Setup(TrainConfig(envs=max(sizes.train_envs), total_steps=sizes.train_steps,
                                chunk_steps=sizes.train_steps, updates_per_step=sizes.train_updates,
                                bank_size=16, n_heldout=8, max_steps=4, duration_s=0.15, shard=False))
    rows = []
    for n in sizes.train_envs:
        if budget.left_s() < min_left_s:
            rows.append(_skip("train", n, "budget spent"))
            continue
        by_mode = {r["mode"]: r for r in bench(setup, n, sizes.train_steps, sizes.train_updates, sizes.reps)}
        fused = by_mode["fused"]
        row = dict(part="train", size=n, k_steps=sizes.train_steps, updates_per_step=sizes.train_updates,
                   fused_s=fused["wall_s"], loop_s=by_mode["loop"]["wall_s"],
                   loop_sync_s=by_mode["loop-sync"]["wall_s"],
                   fused_env_steps_per_s=fused["env_steps_per_s"],
                   speedup_vs_loop=by_mode["loop"]["wall_s"] / fused["wall_s"],
                   speedup_vs_loop_sync=by_mode["loop-sync"]["wall_s"] / fused["wall_s"], load_avg=load_avg())
        rows.append(row)
        print(f"train {n:6d}: fused {row['fused_s']:.3f} s, loop {row['loop_s']:.3f} s "
              f"({row['speedup_vs_loop']:.2f}x)", flush=True)
    return rows


def crepe_part(sizes: Sizes, budget: Budget, min_left_s: float) -> list[dict]:
    """CREPE-tiny in the graph per env step, against a cached target."""
    import jax.numpy as jnp
    import numpy as np

    from benchmarks.common import time_calls
    from jaxsynth import crepe as C
    from jaxsynth import perceptual as P

    try:
        weights = C.load_weights("tiny")
    except Exception as exc:  # weights not installed: say so instead of failing the suite
        return [_skip("crepe", n, f"CREPE tiny weights unavailable: {type(exc).__name__}: {exc}")
                for n in sizes.crepe_envs]
    pcfg = P.PerceptualConfig(model="tiny")

    @jax.jit
    def step(audio, target, weights):
        pred = P.analyze(audio, weights, pcfg)
        return P.embedding_distance(pred, target, pcfg) + P.pitch_posterior_distance(pred, target, pcfg)

    rows = []
    for n in sizes.crepe_envs:
        if budget.left_s() < min_left_s:
            rows.append(_skip("crepe", n, "budget spent"))
            continue
        t = np.arange(11025) / 22050.0
        f0 = 110.0 * 2.0 ** (np.random.default_rng(0).uniform(0, 36, n) / 12.0)
        audio = jnp.asarray((0.3 * np.sin(2 * np.pi * f0[:, None] * t)).astype(np.float32))
        target = jax.jit(lambda a: P.analyze(a, weights, pcfg))(audio[::-1])
        t0 = time.perf_counter()
        jax.block_until_ready(step(audio, target, weights))
        first_s = time.perf_counter() - t0
        timing = time_calls(lambda: step(audio, target, weights), sizes.reps)
        row = dict(part="crepe", size=n, step_ms=1e3 * timing["step_s"], cpu_ms=1e3 * timing["cpu_s"],
                   ms_per_env=1e3 * timing["step_s"] / n, first_call_s=first_s, load_avg=load_avg())
        rows.append(row)
        print(f"crepe-tiny {n:6d}: {row['step_ms']:9.1f} ms per step, {row['ms_per_env']:.3f} ms/env", flush=True)
    return rows


PART_FNS = {"render": render_part, "env": env_part, "train": train_part, "crepe": crepe_part}


def _cell(row: dict, key: str, spec: str = ",.0f") -> str:
    return "-" if row.get(key) is None else format(row[key], spec)


def markdown(rows: list[dict], reduced: bool) -> str:
    """One table per part; skipped sizes listed with the reason."""
    out = []
    by = {p: [r for r in rows if r["part"] == p] for p in PARTS}
    done = lambda p: [r for r in by[p] if "skipped" not in r]
    if done("render"):
        out += ["Render (every module on, 22.05 kHz, 0.5 s), ours vs SynthAX 0.2.2 `Voice`, same run:", "",
                "| batch | ours x rt | SynthAX x rt | ours / SynthAX (by CPU time) | load (1 min) |",
                "| ---: | ---: | ---: | ---: | ---: |"]
        out += [f"| {r['size']} | {_cell(r, 'ours_x_rt')} | {_cell(r, 'synthax_x_rt')} "
                f"| {_cell(r, 'ratio', '.2f')} ({_cell(r, 'ratio_cpu', '.2f')}) | {r['load_avg'][0]:.2f} |"
                for r in done("render")] + [""]
    if done("env"):
        out += ["Env step (render + features + loss + reward + auto-reset) vs one bare 1,024-point STFT of "
                "as many clips, same run:", "",
                "| envs | step (ms) | bare STFT (ms) | step / STFT (by CPU time) | STFT, no output (ms) "
                "| step / that | per env (us) | XLA temp (MB) | load (1 min) |",
                "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        out += [f"| {r['size']} | {r['step_ms']:,.1f} | {r['stft_ms']:,.1f} | {r['step_over_stft']:.2f} "
                f"({r['step_over_stft_cpu']:.2f}) | {_cell(r, 'stft_reduced_ms', ',.1f')} "
                f"| {_cell(r, 'step_over_stft_reduced', '.2f')} | {r['us_per_env']:,.0f} "
                f"| {(r['xla_temp_bytes'] or 0) / 2**20:,.0f} | {r['load_avg'][0]:.2f} |" for r in done("env")] + [""]
    if done("train"):
        out += ["Training: fused `lax.scan` vs host loop over the same one-step program:", "",
                "| envs | K x updates | fused (s) | loop (s) | loop + sync (s) | loop / fused | env steps/s fused "
                "| load (1 min) |", "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        out += [f"| {r['size']} | {r['k_steps']} x {r['updates_per_step']} | {r['fused_s']:.3f} | {r['loop_s']:.3f} "
                f"| {r['loop_sync_s']:.3f} | {r['speedup_vs_loop']:.2f} | {r['fused_env_steps_per_s']:,.0f} "
                f"| {r['load_avg'][0]:.2f} |" for r in done("train")] + [""]
    if done("crepe"):
        out += ["CREPE tiny in the graph (resample, frames, network, two distances), per env step:", "",
                "| envs | step (ms) | per env (ms) | first call incl. compile (s) | load (1 min) |",
                "| ---: | ---: | ---: | ---: | ---: |"]
        out += [f"| {r['size']} | {r['step_ms']:,.1f} | {r['ms_per_env']:.3f} | {r['first_call_s']:.1f} "
                f"| {r['load_avg'][0]:.2f} |" for r in done("crepe")] + [""]
    skipped = [r for r in rows if "skipped" in r]
    if skipped:
        out += ["Skipped: " + "; ".join(f"{r['part']} {r['size']} ({r['skipped']})" for r in skipped), ""]
    if reduced:
        out.insert(0, "**CPU, reduced sizes** (`--cpu-reduced`): no accelerator was visible to JAX, so "
                      "every part ran at the sizes a 2-core CPU finishes in the budget; on a GPU/TPU the "
                      "same command measures batch 1 ... 16,384.\n")
    return "\n".join(out)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-reduced", action="store_true",
                    help="CPU-sized run (default when JAX sees no accelerator)")
    ap.add_argument("--full", action="store_true", help="full sizes even on a CPU")
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    ap.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget for all parts")
    ap.add_argument("--min-left-s", type=float, default=30.0,
                    help="a size starts only with at least this much budget left")
    ap.add_argument("--json", default=DEFAULT_JSON, help="rows and setup as JSON (rewritten after each part)")
    ap.add_argument("--results-md", default=RESULTS_MD)
    ap.add_argument("--no-write-results", action="store_true")
    a = ap.parse_args(argv)
    accelerator = jax.default_backend() != "cpu"
    reduced = a.cpu_reduced or (not accelerator and not a.full)
    sizes = CPU_REDUCED if reduced else FULL
    meta = metadata(sys.argv[1:] if argv is None else argv, "benchmarks/device_suite.py")
    meta.update(backend=jax.default_backend(), devices=[str(d) for d in jax.devices()], reduced=reduced,
                sizes=dataclasses.asdict(sizes), budget_s=a.budget_s)
    print(f"# device suite on {meta['device']} ({'CPU, reduced sizes' if reduced else 'full sizes'}), "
          f"budget {a.budget_s:.0f} s, load {load_avg()}", flush=True)
    budget, t0 = Budget(a.budget_s), time.perf_counter()
    rows: list[dict] = []
    for part in a.parts:
        try:
            rows += PART_FNS[part](sizes, budget, a.min_left_s)
        except Exception as exc:  # one failing part must not lose the others' figures
            traceback.print_exc()
            rows.append(_skip(part, 0, f"failed: {type(exc).__name__}: {exc}"))
        if a.json:
            write_json(a.json, dict(setup=meta, rows=rows))
    meta["wall_s"] = time.perf_counter() - t0
    text = (f"{SECTION}\n\nOne run of `benchmarks/device_suite.py` on the device JAX sees ({meta['backend']}), "
            f"{meta['wall_s']:.0f} s wall of a {a.budget_s:.0f} s budget. Every ratio compares two figures "
            "of this run.\n\n" + metadata_lines(meta, load_avg()) + "\n" + markdown(rows, reduced))
    print("\n" + text)
    if a.json:
        write_json(a.json, dict(setup=meta, rows=rows))
    if not a.no_write_results:
        write_sections({SECTION: text}, a.results_md)
        print(f"\nwrote section '{SECTION}' to {a.results_md}")
    return dict(setup=meta, rows=rows)


if __name__ == "__main__":
    main()
