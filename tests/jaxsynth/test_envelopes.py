"""Tests for jaxsynth/envelopes.py against the analytic linear ADSR.

Reference: the piecewise-linear ADSR written out segment by segment in float64 below (attack
0 -> 1 over A, decay 1 -> S over D, hold S, release from the level at note-off to 0 over R;
torchsynth's ADSR with alpha = 1), evaluated on the sample grid t = n / fs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsynth.envelopes import adsr

FS = 22050
N = FS  # 1 s of samples
T = np.arange(N) / FS


def reference_adsr(t, a, d, s, r, off):
    """Segment-by-segment analytic ADSR, float64."""
    t = np.asarray(t, np.float64)

    def held(x):
        if x < a:
            return x / a
        if x < a + d:
            return 1.0 + (s - 1.0) * (x - a) / d
        return s

    level_off = held(off)
    out = np.empty_like(t)
    for i, x in enumerate(t):
        out[i] = held(x) if x < off else max(level_off * (1.0 - (x - off) / r), 0.0)
    return out


_adsr = jax.jit(adsr)


def render(a, d, s, r, off):
    return np.asarray(_adsr(jnp.asarray(T, jnp.float32), jnp.float32(a), jnp.float32(d),
                            jnp.float32(s), jnp.float32(r), jnp.float32(off)), np.float64)


CASES = [  # attack, decay, sustain, release, note-off (s)
    (0.05, 0.1, 0.6, 0.2, 0.5),
    (0.001, 0.002, 0.3, 0.001, 0.3),  # the shortest times: 22, 44, 22 samples
    (0.3, 0.2, 0.8, 0.25, 0.1),  # note-off mid-attack: release from 1/3
    (0.02, 0.3, 0.25, 0.1, 0.15),  # note-off mid-decay
    (0.01, 0.05, 0.0, 0.1, 0.6),  # sustain 0: silent before the note-off
    (0.01, 0.05, 1.0, 2.0, 0.4),  # release longer than the clip
]


@pytest.mark.parametrize("a, d, s, r, off", CASES)
def test_adsr_matches_analytic_envelope(a, d, s, r, off):
    # Tolerance 1e-6 + slope x 1.2e-7 s: the envelope is evaluated at float32 times, and for
    # t < 1 s a time is off by up to 2 ulps (1.2e-7 s) after rounding and subtraction, which a
    # ramp of slope (level / segment time, up to 1000 / s here) turns into a level error.
    # Samples within one sample of a breakpoint may land on either side in float32, so they
    # are compared with one-sample slack (the slope times 1 / fs).
    got, ref = render(a, d, s, r, off), reference_adsr(T, a, d, s, r, off)
    slope = max(1 / a, (1 - s) / d, 1 / r)
    breaks = np.array([a, a + d, off, off + r])
    near = np.min(np.abs(T[:, None] - breaks[None]), axis=1) <= 1.0 / FS
    np.testing.assert_allclose(got[~near], ref[~near], atol=1e-6 + slope * 1.2e-7)
    np.testing.assert_allclose(got[near], ref[near], atol=slope / FS + 1e-6)
    assert got.min() >= 0.0 and got.max() <= 1.0


@pytest.mark.parametrize("a", [0.001, 0.0137, 0.25])
def test_attack_reaches_one_at_attack_time_within_one_sample(a):
    d, s = 0.5, 0.5
    got = render(a, d, s, 0.1, 0.9)
    peak = int(np.argmax(got))
    assert abs(peak - a * FS) <= 1.0, (peak, a * FS)
    # the peak sample is within one sample's worth of slope of 1 (1 itself is reached between
    # samples unless a * fs is an integer), and the attack ramp is t / a up to it
    assert got[peak] >= 1.0 - max(1 / a, (1 - s) / d) / FS - 1e-6
    np.testing.assert_allclose(got[:peak], T[:peak] / a, atol=1e-6)


@pytest.mark.parametrize("a, d, s", [(0.01, 0.1, 0.5), (0.002, 0.0371, 0.1234), (0.1, 0.3, 0.9)])
def test_decay_ends_at_exact_sustain_within_one_sample(a, d, s):
    got = render(a, d, s, 0.1, 0.9)
    sustained = np.flatnonzero(got == np.float32(s))
    assert sustained.size > 0
    assert abs(sustained[0] - (a + d) * FS) <= 1.0 + 1e-9, (sustained[0], (a + d) * FS)
    # the sustain level is exact (not approximately s): every sample until note-off
    end = int(np.floor(0.9 * FS))
    assert np.all(got[sustained[0]:end] == np.float32(s))


@pytest.mark.parametrize("off, r", [(0.5, 0.2), (0.3, 0.001), (0.05, 0.0731)])
def test_release_starts_at_note_off_level_and_ends_at_zero(off, r):
    a, d, s = 0.02, 0.1, 0.4
    got = render(a, d, s, r, off)
    n_off = int(np.ceil(off * FS))
    level = reference_adsr([off], a, d, s, r, off)[0]
    assert abs(got[n_off] - level * (1 - (T[n_off] - off) / r)) < 1e-5
    zero_at = np.argmax((got == 0.0) & (T > off))
    assert abs(zero_at - (off + r) * FS) <= 1.0 + 1e-9, (zero_at, (off + r) * FS)  # a sample
    assert np.all(got[zero_at:] == 0.0)


def test_envelope_is_continuous_at_segment_boundaries():
    # No jumps: between neighbouring samples the envelope moves at most its steepest slope
    # times one sample (a jump at a boundary would show as a step of the whole level).
    for a, d, s, r, off in CASES:
        got = render(a, d, s, r, off)
        slope = max(1 / a, (1 - s) / d, 1 / r)
        assert np.max(np.abs(np.diff(got))) <= slope / FS * (1 + 1e-4) + 1e-6, (a, d, s, r, off)


def test_gradients_with_respect_to_times_match_the_closed_form_area():
    t = jnp.asarray(T[: FS // 2], jnp.float32)

    def area(theta):
        a, d, s, r, off = theta
        return jnp.sum(adsr(t, a, d, s, r, off)) / FS

    theta = jnp.asarray([0.05, 0.1, 0.6, 0.08, 0.3], jnp.float32)
    g = np.asarray(jax.jit(jax.grad(area))(theta))
    assert np.all(np.isfinite(g)) and np.all(g != 0.0), g
    # Closed form of the area (continuous time, integral of the envelope): with the note-off
    # after attack + decay, area = a/2 + d (1 + s)/2 + s (off - a - d) + s r / 2, so
    # d/da = 1/2 - s, d/dd = (1 - s)/2, d/ds = d/2 + off - a - d + r/2, d/dr = s/2, d/doff = s.
    a, d, s, r, off = np.asarray(theta, np.float64)
    expect = [0.5 - s, (1 - s) / 2, d / 2 + off - a - d + r / 2, s / 2, s]
    # 2e-3: the sampled sum differs from the integral by O(1/fs) per breakpoint (~5e-5 s each)
    # over slopes <= 1/a; measured within 1e-3.
    np.testing.assert_allclose(g, expect, atol=2e-3)


def test_adsr_broadcasts_over_a_batch_time_major():
    t = jnp.asarray(T[:100, None], jnp.float32)
    a = jnp.asarray([0.001, 0.002, 0.004], jnp.float32)
    out = _adsr(t, a, 0.01, 0.5, 0.1, 0.05)
    assert out.shape == (100, 3)
    np.testing.assert_allclose(np.asarray(out[:, 1]), render(0.002, 0.01, 0.5, 0.1, 0.05)[:100], atol=1e-6)
