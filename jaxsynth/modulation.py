"""Low-frequency modulation and control-rate signals.

Slow signals (LFO, filter envelope, pitch) are computed at a control rate of one value per
``hop`` samples and linearly interpolated to audio rate: ~30x less work than evaluating them
per sample, and inaudible for modulation below a few hundred Hz.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from jaxsynth.oscillators import frac, sine, triangle

LFO_SHAPES = ("sine", "triangle", "saw", "square")


def lfo(t_s: Float[Array, "times 1"], rate_hz: Float[Array, "batch"],
        shape_onehot: Float[Array, "batch 4"]) -> Float[Array, "times batch"]:
    """Bipolar LFO in [-1, 1], retriggered at note-on (phase 0 at t = 0), so a preset
    always sounds the same. ``shape_onehot`` weights (sine, triangle, saw, square)."""
    phase = frac(rate_hz * t_s)
    # a written-out weighted sum: a stack and a reduction over the shape axis ran as a separate
    # CPU reduction kernel that cost more than the four shapes themselves
    mixed = (shape_onehot[:, 0] * sine(phase) + shape_onehot[:, 1] * triangle(phase)
             + shape_onehot[:, 2] * (2.0 * frac(phase + 0.5) - 1.0)
             + shape_onehot[:, 3] * jnp.where(phase < 0.5, 1.0, -1.0))
    # clipped: the polynomial sine overshoots +-1 by 2.3e-4, which would lift the tremolo
    # gain above 1 and the output above its documented bound
    return jnp.clip(mixed, -1.0, 1.0)


def control_times(num_blocks: int, hop: int, sample_rate: int) -> Float[Array, "points"]:
    """The num_blocks + 1 control points (block edges), in seconds."""
    return jnp.arange(num_blocks + 1, dtype=jnp.float32) * (hop / sample_rate)


def interpolate_control(points: Float[Array, "points ..."], hop: int) -> Float[Array, "samples ..."]:
    """Linear interpolation, time-major, of control points at block edges to audio rate:
    (num_blocks + 1, ...) -> (num_blocks * hop, ...)."""
    ramp = (jnp.arange(hop, dtype=jnp.float32) / hop).reshape((1, hop) + (1,) * (points.ndim - 1))
    start, end = points[:-1, None], points[1:, None]
    out = start + (end - start) * ramp
    return out.reshape((-1,) + points.shape[1:])
