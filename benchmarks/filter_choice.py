"""Which implementation of the synth's time-varying SVF: measured, not guessed.

The filter is a 2-state linear recurrence whose coefficients change every sample (cutoff from
the filter envelope, LFO and key tracking). Variants, each on the same input as ``render``
feeds it (time-major noise, a per-sample cutoff interpolated from a control rate, one Q and
one type per sound):

* ``scan``: ``filters.svf`` as used by render: ``lax.scan`` over samples, carry = a vector
  over the batch (time-major);
* ``scan-unroll8``: the same step with ``lax.scan(..., unroll=8)`` (fewer loop iterations);
* ``scan-vmap``: ``vmap`` over sounds of a per-sound ``lax.scan`` (batch-major input);
* ``associative``: ``filters.svf_associative``: the recurrence as 2x2 affine maps combined by
  ``lax.associative_scan`` (O(log n) depth, ~O(n) extra work and memory);
* ``fft-lti``: frequency-domain filtering (rfft, multiply by the biquad's exact response,
  irfft, zero-padded to 2n). It is only correct for *constant* coefficients, so it runs on
  (and is compared against ``scan`` with) a constant cutoff: a lower bound on what
  frequency-domain filtering could cost, not a candidate for a modulated filter.

Reported per batch: compile time, steady-state time (median of --repeats calls after one
warm-up), x realtime (batch x clip seconds / time), max |y - y_scan| relative to y_scan's peak.

    python benchmarks/filter_choice.py --batches 64 1024 4096 --repeats 5 --json /tmp/f.json
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import compile_jit, load_avg, metadata, time_calls, write_json  # noqa: E402
from jaxsynth.filters import svf, svf_associative, svf_g, svf_tick  # noqa: E402
from jaxsynth.modulation import interpolate_control  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Config:
    batches: tuple[int, ...] = (64, 1024, 4096)
    repeats: int = 5
    sample_rate: int = 22050
    duration_s: float = 0.5
    control_hop: int = 32
    variants: tuple[str, ...] = ("scan", "scan-unroll8", "scan-vmap", "associative", "fft-lti")


def svf_scan_unrolled(x, g, k, mix, unroll: int = 8):
    """``filters.svf`` with a partially unrolled loop (the same ``svf_tick``, same numerics)."""
    w_lp, w_bp, w_hp = mix[:, 0], mix[:, 1] * k, mix[:, 2]

    def step(state, inputs):
        state, (lp, bp, hp) = svf_tick(state, *inputs, k)
        return state, w_lp * lp + w_bp * bp + w_hp * hp

    zero = jnp.zeros(x.shape[1:], x.dtype)
    return jax.lax.scan(step, (zero, zero), (x, g), unroll=unroll)[1]


def svf_vmap(x_bt, g_bt, k, mix):
    """Batch-major: vmap over sounds of a scalar-carry scan (inputs (batch, samples))."""
    one = lambda x, g, k_, m: svf(x[:, None], g[:, None], k_[None], m[None])[:, 0]
    return jax.vmap(one)(x_bt, g_bt, k, mix)


def svf_fft_lti(x, g0, k, mix):
    """Constant-coefficient filter in the frequency domain: H(z) of the TPT SVF, which is the
    bilinear transform of the analog prototype, evaluated on the rfft grid of a 2n-point
    transform. ``g0`` (batch,) is the one cutoff gain per sound."""
    n = x.shape[0]
    z = jnp.exp(1j * jnp.pi * jnp.arange(n + 1) / n)[:, None]  # rfft bins of a 2n transform
    s = (z - 1.0) / (z + 1.0) / g0  # bilinear s / w_c (w_c pre-warped: g = tan(pi fc / fs))
    den = s * s + k * s + 1.0
    h = (mix[:, 0] + mix[:, 1] * k * s + mix[:, 2] * s * s) / den
    spec = jnp.fft.rfft(x, 2 * n, axis=0) * h
    return jnp.fft.irfft(spec, 2 * n, axis=0)[:n].astype(x.dtype)


def make_inputs(batch: int, cfg: Config, seed: int = 0):
    """Time-major inputs like render's: noise, a swept per-sample cutoff gain from control
    points, Q in [0.5, 12], random filter types."""
    rng = np.random.default_rng(seed)
    n = int(round(cfg.sample_rate * cfg.duration_s))
    blocks = -(-n // cfg.control_hop)
    x = rng.uniform(-1, 1, (n, batch)).astype(np.float32)
    t = np.arange(blocks + 1)[:, None] * cfg.control_hop / cfg.sample_rate
    rate = rng.uniform(0.5, 8.0, batch)
    fc = 40.0 * 400.0 ** (0.5 + 0.5 * np.sin(2 * np.pi * rate * t))  # 40 Hz .. 16 kHz
    g_ctrl = svf_g(jnp.asarray(fc, jnp.float32), cfg.sample_rate)
    g = interpolate_control(g_ctrl, cfg.control_hop)[:n]
    k = (1.0 / rng.uniform(0.5, 12.0, batch)).astype(np.float32)
    mix = np.eye(3, dtype=np.float32)[rng.integers(0, 3, batch)]
    fc0 = rng.uniform(100, 8000, batch).astype(np.float32)
    return dict(x=jnp.asarray(x), g=g, k=jnp.asarray(k), mix=jnp.asarray(mix),
                g_const=jnp.broadcast_to(svf_g(jnp.asarray(fc0), cfg.sample_rate), (n, batch)),
                g0=svf_g(jnp.asarray(fc0), cfg.sample_rate))


def variant_call(name: str, inp):
    """(jitted function, its arguments, the scan output it must match)."""
    if name == "scan":
        return jax.jit(svf), (inp["x"], inp["g"], inp["k"], inp["mix"])
    if name == "scan-unroll8":
        return jax.jit(svf_scan_unrolled), (inp["x"], inp["g"], inp["k"], inp["mix"])
    if name == "scan-vmap":  # transposes outside the timed call: batch-major data is assumed
        return (jax.jit(lambda *a: svf_vmap(*a).T),
                (inp["x"].T, inp["g"].T, inp["k"], inp["mix"]))
    if name == "associative":
        return jax.jit(svf_associative), (inp["x"], inp["g"], inp["k"], inp["mix"])
    if name == "fft-lti":
        return jax.jit(svf_fft_lti), (inp["x"], inp["g0"], inp["k"], inp["mix"])
    raise ValueError(f"unknown variant {name!r}")


def time_call(fn, args, repeats: int) -> tuple[float, float, jax.Array]:
    """(compile seconds, median steady-state seconds, output) via benchmarks.common."""
    compiled, compile_s, _ = compile_jit(fn, *args)
    out = jax.block_until_ready(compiled(*args))
    return compile_s, time_calls(lambda: compiled(*args), repeats)["step_s"], out


def run(cfg: Config) -> list[dict]:
    rows = []
    for batch in cfg.batches:
        inp = make_inputs(batch, cfg)
        jax.clear_caches()  # so every variant's compile time is its own
        ref = None
        for name in ("scan",) + tuple(v for v in cfg.variants if v != "scan"):
            fn, args = variant_call(name, inp)
            compile_s, step_s, out = time_call(fn, args, cfg.repeats)
            if name == "scan":
                ref = np.asarray(out)
                if name not in cfg.variants:
                    continue
            if name == "fft-lti":
                r = np.asarray(jax.jit(svf)(inp["x"], inp["g_const"], inp["k"], inp["mix"]))
            else:
                r = ref
            dev = float(np.max(np.abs(np.asarray(out) - r)) / np.max(np.abs(r)))
            row = dict(variant=name, batch=batch, compile_s=compile_s, step_s=step_s,
                       x_realtime=batch * cfg.duration_s / step_s, max_rel_dev_vs_scan=dev,
                       load_avg=load_avg())
            rows.append(row)
            print(f"{name:>13} batch {batch:>5}: compile {compile_s:6.2f} s, step {step_s * 1e3:9.1f} ms, "
                  f"{row['x_realtime']:9.0f} x realtime, max dev vs scan {dev:.1e}", flush=True)
            del out
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=list(Config.batches))
    ap.add_argument("--repeats", type=int, default=Config.repeats)
    ap.add_argument("--variants", nargs="+", default=list(Config.variants))
    ap.add_argument("--json", metavar="OUT", help="also write the rows and machine info as JSON")
    a = ap.parse_args(argv)
    cfg = Config(batches=tuple(a.batches), repeats=a.repeats, variants=tuple(a.variants))
    info = metadata(argv, "benchmarks/filter_choice.py")
    print(info, flush=True)
    rows = run(cfg)
    info["load_avg_after"] = load_avg()
    if a.json:
        write_json(a.json, dict(config=dataclasses.asdict(cfg), machine=info, rows=rows))


if __name__ == "__main__":
    main()
