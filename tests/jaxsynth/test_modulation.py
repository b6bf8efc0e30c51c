"""Tests for jaxsynth/modulation.py.

References: the LFO shapes' closed forms (np.sin, the triangle/saw/square of a phase r t) in
float64, and np.interp for the control-rate interpolation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsynth.modulation import LFO_SHAPES, control_times, interpolate_control, lfo

SR, HOP, BLOCKS = 22050, 32, 345  # the synth's defaults: 0.5 s in 345 control blocks
T = np.asarray(control_times(BLOCKS, HOP, SR), np.float64)
RATES = np.array([0.1, 0.37, 1.0, 5.0, 13.3, 20.0])


def reference_lfo(shape: str, t, rate):
    p = (rate * t) % 1.0
    return {"sine": np.sin(2 * np.pi * p),
            "triangle": 1.0 - 4.0 * np.abs(((p + 0.25) % 1.0) - 0.5),
            "saw": 2.0 * ((p + 0.5) % 1.0) - 1.0,
            "square": np.where(p < 0.5, 1.0, -1.0)}[shape]


_lfo = jax.jit(lfo)


def run_lfo(shape: str, t=T):
    onehot = np.zeros((len(RATES), 4), np.float32)
    onehot[:, LFO_SHAPES.index(shape)] = 1.0
    return np.asarray(_lfo(jnp.asarray(t, jnp.float32)[:, None], jnp.asarray(RATES, jnp.float32),
                           jnp.asarray(onehot)), np.float64)


def test_control_times_are_block_edges():
    np.testing.assert_allclose(T, np.arange(BLOCKS + 1) * HOP / SR, rtol=1e-6)
    assert len(T) == BLOCKS + 1 and T[-1] >= 0.5


@pytest.mark.parametrize("shape", LFO_SHAPES)
def test_lfo_shapes_match_closed_forms(shape):
    got = run_lfo(shape)
    ref = reference_lfo(shape, T[:, None], RATES[None])
    assert got.shape == (len(T), len(RATES))
    # 5e-4: the polynomial sine's error is 4e-4; float32 phase r t (<= 10 cycles) is off by
    # ~1e-6 cycles, which the steepest shapes (slope 4 per cycle) turn into 4e-6.
    ok = np.abs(got - ref) < 5e-4
    if shape in ("saw", "square"):  # a phase within 1e-5 cycles of a jump may land either side
        phase = (RATES[None] * T[:, None]) % 1.0
        edge = {"saw": 0.5, "square": 0.5}[shape]
        ok |= (np.abs(phase - edge) < 1e-5) | (phase < 1e-5) | (phase > 1 - 1e-5)
    assert ok.all(), np.argwhere(~ok)[:5]
    assert got.min() >= -1.0 and got.max() <= 1.0  # exactly bounded (the tremolo relies on it)


@pytest.mark.parametrize("shape", ["sine", "triangle", "saw"])
def test_lfo_rate_from_zero_crossings(shape):
    # 4 s at 1 kHz: upward zero crossings per second = rate (the saw crosses upward mid-ramp)
    t = np.arange(4000) / 1000.0
    y = run_lfo(shape, t)
    for j, r in enumerate(RATES):
        if r < 1.0:
            continue  # fewer than 4 cycles in 4 s
        up = np.flatnonzero((y[:-1, j] < 0) & (y[1:, j] >= 0))
        period = np.mean(np.diff(up)) / 1000.0
        assert abs(period * r - 1.0) < 2e-3, (shape, r, period)  # 1 ms grid over >= 4 periods


def test_lfo_is_retriggered_at_note_on():
    at0 = [run_lfo(s, np.zeros(1))[0] for s in LFO_SHAPES]
    np.testing.assert_allclose(at0[:3], 0.0, atol=1e-6)  # sine, triangle, saw start at 0 going up
    np.testing.assert_array_equal(at0[3], 1.0)


def test_lfo_mixes_shapes_linearly():
    w = np.array([0.2, 0.3, 0.1, 0.4], np.float32)
    mixed = np.asarray(_lfo(jnp.asarray(T, jnp.float32)[:, None], jnp.asarray(RATES, jnp.float32),
                            jnp.asarray(np.tile(w, (len(RATES), 1)))))
    parts = sum(wi * run_lfo(s) for wi, s in zip(w, LFO_SHAPES))
    # 1e-4: the parts are clipped one by one, the mix once (sine overshoot 2.3e-4 x weight)
    np.testing.assert_allclose(mixed, parts, atol=1e-4)


def test_interpolate_control_is_linear_between_points():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(BLOCKS + 1, 3)).astype(np.float32)
    got = np.asarray(jax.jit(interpolate_control, static_argnums=1)(jnp.asarray(points), HOP))
    assert got.shape == (BLOCKS * HOP, 3)
    x = np.arange(BLOCKS * HOP) / HOP  # sample n sits n / hop blocks in
    ref = np.stack([np.interp(x, np.arange(BLOCKS + 1), points[:, j]) for j in range(3)], 1)
    # 1e-6 x the point scale (~4): float32 a + (b - a) j / hop
    np.testing.assert_allclose(got, ref, atol=4e-6)
    np.testing.assert_array_equal(got[::HOP], points[:-1])  # block starts are the points exactly
    # 1-D input and a hop of 1 (identity on the first points)
    one = np.asarray(interpolate_control(jnp.asarray(points[:, 0]), 1))
    np.testing.assert_array_equal(one, points[:-1, 0])
