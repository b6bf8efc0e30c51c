"""Time-varying resonant state-variable filter (low / band / high pass).

The topology-preserving-transform SVF (Zavalishin, "The Art of VA Filter Design", 2012,
ch. 3-4): the bilinear transform of the analog SVF with the cutoff pre-warped, so with
constant coefficients it is exactly the biquad that ``scipy.signal.bilinear`` gives for
H_lp(s) = w^2 / (s^2 + (w/Q) s + w^2) at w = 2 fs tan(pi fc / fs). It stays stable and
click-free when its cutoff and Q move every sample, which a direct-form biquad does not.

Coefficients: g = tan(pi fc / fs) and k = 1 / Q, computed at a control rate and interpolated
per sample by the caller. The recurrence runs as a ``lax.scan`` over samples whose carry is a
vector over voices (time-major). benchmarks/filter_choice.py measured it against
``lax.associative_scan`` over the equivalent 2x2 linear recurrence; see RESULTS.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

FILTER_TYPES = ("lowpass", "bandpass", "highpass")


def svf_g(cutoff_hz, sample_rate: float):
    """Pre-warped integrator gain g = tan(pi fc / fs); fc is clipped to (10 Hz, 0.49 fs)."""
    fc = jnp.clip(cutoff_hz, 10.0, 0.49 * sample_rate)
    return jnp.tan(np.pi / sample_rate * fc)


def svf_tick(state, xn, gn, k):
    """One sample of the TPT SVF: integrator states (s1, s2), input ``xn``, gain ``gn``,
    damping ``k`` -> (new states, (lowpass, bandpass, highpass)). Shared by ``svf`` and the
    fused render loop in ``synth.py``."""
    s1, s2 = state
    hp = (xn - (gn + k) * s1 - s2) / (1.0 + gn * (gn + k))
    v1 = gn * hp
    bp = v1 + s1
    v2 = gn * bp
    lp = v2 + s2
    return (bp + v1, lp + v2), (lp, bp, hp)


def svf(x: Float[Array, "samples voices"], g: Float[Array, "samples voices"],
        k: Float[Array, "voices"], mix: Float[Array, "voices 3"]) -> Float[Array, "samples voices"]:
    """Filter ``x`` (time-major: one column per voice) with per-sample cutoff gains ``g`` and a
    per-voice damping k = 1/Q; output = mix @ (lowpass, k * bandpass, highpass).

    The band-pass is scaled by k so its peak gain is 1 (0 dB) at any Q; low- and high-pass
    peak at ~Q near the cutoff, as the analog prototype does. The scan's carry is a vector
    over voices: on a CPU this layout ran 2.4x (batch 64) to 15x (batch 4096) faster than
    ``vmap`` of a per-voice scan in benchmarks/filter_choice.py (RESULTS.md)."""
    w_lp, w_bp, w_hp = mix[:, 0], mix[:, 1] * k, mix[:, 2]

    def step(state, inputs):
        state, (lp, bp, hp) = svf_tick(state, *inputs, k)
        return state, w_lp * lp + w_bp * bp + w_hp * hp

    zero = jnp.zeros(x.shape[1:], x.dtype)
    _, y = jax.lax.scan(step, (zero, zero), (x, g))
    return y


def svf_associative(x, g, k, mix):
    """``svf`` (same arguments, time-major) as one linear recurrence s[n+1] = A[n] s[n] + b[n] x[n],
    y[n] = C[n] s[n] + d[n] x[n], solved with ``lax.associative_scan`` (O(log n) depth).
    Kept for the implementation study (benchmarks/filter_choice.py), not used by render."""
    k = jnp.broadcast_to(k, g.shape)
    a1 = 1.0 / (1.0 + g * (g + k))
    ga = g * a1
    # hp = a1 x - a1 (g+k) s1 - a1 s2 ; bp = g hp + s1 ; lp = g bp + s2
    hp_s1, hp_s2, hp_x = -a1 * (g + k), -a1, a1
    bp_s1, bp_s2, bp_x = 1.0 + g * hp_s1, g * hp_s2, ga
    lp_s1, lp_s2, lp_x = g * bp_s1, 1.0 + g * bp_s2, g * bp_x
    # s1' = s1 + 2 g hp ; s2' = s2 + 2 g bp
    A = jnp.stack([jnp.stack([1.0 + 2 * g * hp_s1, 2 * g * hp_s2], -1),
                   jnp.stack([2 * g * bp_s1, 1.0 + 2 * g * bp_s2], -1)], -2)
    b = jnp.stack([2 * g * hp_x, 2 * g * bp_x], -1) * x[..., None]

    def combine(left, right):
        a_l, b_l = left
        a_r, b_r = right
        return a_r @ a_l, (a_r @ b_l[..., None])[..., 0] + b_r

    _, s_after = jax.lax.associative_scan(combine, (A, b))
    s = jnp.concatenate([jnp.zeros_like(s_after[:1]), s_after[:-1]], axis=0)
    w_lp, w_bp, w_hp = mix[:, 0], mix[:, 1] * k, mix[:, 2]
    y_s1 = w_lp * lp_s1 + w_bp * bp_s1 + w_hp * hp_s1
    y_s2 = w_lp * lp_s2 + w_bp * bp_s2 + w_hp * hp_s2
    y_x = w_lp * lp_x + w_bp * bp_x + w_hp * hp_x
    return y_s1 * s[..., 0] + y_s2 * s[..., 1] + y_x * x
