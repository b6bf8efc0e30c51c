"""Band-limited oscillators evaluated from a phase in cycles.

Everything here is a polynomial of the phase, not a call to ``sin``: on a CPU, XLA's ``sin``
runs ~6x slower than the degree-7 polynomial below (benchmarks/RESULTS.md), and with two
oscillators times unison voices per output sample the oscillators would dominate the render.

* sine: an odd polynomial with exact zeros at 0, 1/2 and 1 cycle, least-squares fitted once.
* saw and pulse: naive shapes minus a 2-point polynomial band-limited step (PolyBLEP,
  Valimaki & Huovilainen, "Antialiasing oscillators in subtractive synthesis", IEEE SPM 2007).
  The pulse is the difference of two BLEP saws, which also removes its DC offset.
* triangle: naive; its slope discontinuities alias at -12 dB/octave, far below the saw's.

All shapes are phase-aligned so that their fundamentals are in phase with ``sin(2 pi phase)``
and a morph between neighbours does not cancel.
"""

from __future__ import annotations

import numpy as np
import jax.numpy as jnp
from jaxtyping import Array, Float


def _fit_sine_coefficients() -> tuple[float, float, float]:
    """sin(pi y) ~= y (1 - y^2) (c0 + c1 y^2 + c2 y^4) on [-1, 1] (max error 4.0e-4: harmonics
    below -70 dB; a fourth term would reach 1e-5)."""
    y = np.linspace(1e-3, 1 - 1e-3, 4001)
    basis = np.stack([y * (1 - y**2) * y ** (2 * k) for k in range(3)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, np.sin(np.pi * y), rcond=None)
    return tuple(float(c) for c in coef)


_SINE_C0, _SINE_C1, _SINE_C2 = _fit_sine_coefficients()


def frac(x: Float[Array, "..."]) -> Float[Array, "..."]:
    return x - jnp.floor(x)


def sin_pi(y: Float[Array, "..."]) -> Float[Array, "..."]:
    """sin(pi y) for y in [-1, 1], the odd polynomial fitted by ``_fit_sine_coefficients``."""
    y2 = y * y
    return y * (1.0 - y2) * (_SINE_C0 + y2 * (_SINE_C1 + y2 * _SINE_C2))


def sine(phase: Float[Array, "..."]) -> Float[Array, "..."]:
    """sin(2 pi phase) for phase in [0, 1)."""
    return sin_pi(1.0 - 2.0 * phase)  # sin(2 pi p) = sin(pi (1 - 2p))


def triangle(phase: Float[Array, "..."]) -> Float[Array, "..."]:
    """Triangle in phase with the sine: 0 at phase 0, +1 at 1/4, -1 at 3/4."""
    return 1.0 - 4.0 * jnp.abs(frac(phase + 0.25) - 0.5)


def polyblep(t: Float[Array, "..."], dt: Float[Array, "..."]) -> Float[Array, "..."]:
    """PolyBLEP residual of a unit-2 downward step at t = 0 (mod 1), for phase increment dt
    (cycles/sample, < 0.5): -(1 - t/dt)^2 just after the step, +(1 - (1-t)/dt)^2 just before."""
    d = jnp.minimum(t, 1.0 - t) / dt
    m = jnp.square(jnp.maximum(1.0 - d, 0.0))
    return jnp.where(t < 0.5, -m, m)


def saw_blep(t: Float[Array, "..."], dt: Float[Array, "..."]) -> Float[Array, "..."]:
    """Rising saw 2t - 1 on t in [0, 1), band-limited at its drop."""
    return 2.0 * t - 1.0 - polyblep(t, dt)


def saw(phase, dt):
    """Rising saw whose fundamental is in phase with sin(2 pi phase) (drop at phase 1/2)."""
    return saw_blep(frac(phase + 0.5), dt)


def pulse(phase, dt, width):
    """DC-free pulse, high for a fraction ``width`` of the cycle, as the difference of two
    BLEP saws; at width 1/2 a square in phase with the sine."""
    a = frac(phase + 0.5)
    return saw_blep(a, dt) - saw_blep(frac(a + width), dt)


def morph_weights(shape: Float[Array, "..."]) -> Float[Array, "... 4"]:
    """Crossfade weights over (sine, triangle, saw, pulse) for a morph position in [0, 1]:
    piecewise linear, two neighbours at a time, summing to 1."""
    s = 3.0 * jnp.clip(shape, 0.0, 1.0)[..., None]
    return jnp.maximum(1.0 - jnp.abs(s - jnp.arange(4, dtype=jnp.float32)), 0.0)


def morph(phase, dt, weights: Float[Array, "... 4"], width):
    """The morphing oscillator: weighted sum of the four phase-aligned shapes.

    ``weights``, ``dt`` and ``width`` broadcast against ``phase``; weights[..., k] select
    sine, triangle, saw, pulse."""
    a = frac(phase + 0.5)
    saw_a = saw_blep(a, dt)
    pulse_a = saw_a - saw_blep(frac(a + width), dt)
    return (weights[..., 0] * sine(phase) + weights[..., 1] * triangle(phase)
            + weights[..., 2] * saw_a + weights[..., 3] * pulse_a)


def naive_saw(phase):
    """The aliasing reference (for tests and studies): 2 frac(phase + 1/2) - 1."""
    return 2.0 * frac(phase + 0.5) - 1.0


def hash_noise(index: Array, seed: Array) -> Float[Array, "..."]:
    """Uniform noise in [-1, 1) at integer sample ``index`` for uint32 ``seed`` (broadcast
    together): murmur3's 32-bit finalizer over index * golden ratio + seed. Pure and
    elementwise, so any sample can be drawn alone (the render draws one row per filter step)."""
    h = index.astype(jnp.uint32) * jnp.uint32(0x9E3779B1) + seed
    h = (h ^ (h >> 16)) * jnp.uint32(0x85EBCA6B)
    h = (h ^ (h >> 13)) * jnp.uint32(0xC2B2AE35)
    h = h ^ (h >> 16)
    return (h >> 8).astype(jnp.float32) * (2.0 / (1 << 24)) - 1.0


def white_noise(seed: Array, num_samples: int) -> Float[Array, "samples ..."]:
    """Uniform white noise in [-1, 1), time-major (num_samples, *seed.shape), from a
    counter-based integer hash (``hash_noise`` over the sample index).
    ``seed`` holds uint32s drawn from the render keys, one per sound.

    Why not jax.random: threefry costs ~10x more than the whole oscillator bank on a CPU
    (0.22 s vs 0.022 s for 1024 x 11025 samples, benchmarks/RESULTS.md); the hash is pure,
    fixed-shape and deterministic per key, which is all the noise source needs."""
    index = jnp.arange(num_samples, dtype=jnp.uint32).reshape((-1,) + (1,) * jnp.ndim(seed))
    return hash_noise(index, seed)
