"""Tests for jaxsynth/filters.py.

References: scipy.signal.bilinear of the analog second-order prototypes (pre-warped cutoff)
run through scipy.signal.lfilter / freqz in float64; the analog responses at the cutoff
(|H_lp| = |H_hp| = Q, |H_bp| = 1 with the band-pass scaled by 1/Q); for time-varying
coefficients, a float64 NumPy loop of Zavalishin's TPT SVF equations ("The Art of VA Filter
Design", 2012, ch. 4; Simper's trapezoidal form), and ``svf_associative`` (a different
algorithm for the same recurrence).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from jaxsynth.filters import FILTER_TYPES, svf, svf_associative, svf_g

FS = 22050
N = 4096
MIX = {"lowpass": [1, 0, 0], "bandpass": [0, 1, 0], "highpass": [0, 0, 1]}
# (type, cutoff Hz, Q): every type at low, mid and near-Nyquist cutoffs, low and high Q
SETTINGS = [(t, fc, q) for t in FILTER_TYPES for fc, q in
            [(10.0, 12.0), (40.0, 0.707), (100.0, 12.0), (1000.0, 0.5), (1000.0, 4.0), (8000.0, 2.0),
                                              (10800.0, 12.0), (0.49 * FS, 0.5)]]

_svf = jax.jit(svf)
_svf_assoc = jax.jit(svf_associative)


def scipy_biquad(kind: str, fc: float, q: float, fs: float = FS):
    """Bilinear transform of the analog prototype with the cutoff pre-warped to fc. It uses
    the float32-rounded g and k the filter gets: near fs/2 and at high Q the response is so
    sensitive to them that rounding g (tan's condition number ~50 at 0.49 fs) alone would
    move it by more than the 1e-4 the recurrence is held to."""
    g = float(np.float32(np.tan(np.pi * fc / fs)))
    k = float(np.float32(1.0 / q))
    w = 2 * fs * g
    den = [1.0, w * k, w * w]
    num = {"lowpass": [0.0, 0.0, w * w], "bandpass": [0.0, w * k, 0.0], "highpass": [1.0, 0.0, 0.0]}[kind]
    return signal.bilinear(num, den, fs)


def run_svf(x: np.ndarray, settings, fn=_svf):
    """One column per setting, constant coefficients."""
    v = len(settings)
    g = np.array([np.tan(np.pi * fc / FS) for _, fc, _ in settings], np.float32)
    k = np.array([1.0 / q for _, _, q in settings], np.float32)
    mix = np.array([MIX[t] for t, _, _ in settings], np.float32)
    xs = np.broadcast_to(np.asarray(x, np.float32).reshape(len(x), -1), (len(x), v))
    out = fn(jnp.asarray(xs), jnp.asarray(np.broadcast_to(g, (len(x), v))), jnp.asarray(k), jnp.asarray(mix))
    return np.asarray(out, np.float64)


def test_svf_g_is_prewarped_and_clipped():
    fc = np.array([1.0, 10.0, 440.0, 8000.0, 0.49 * FS, 20000.0], np.float32)
    got = np.asarray(svf_g(jnp.asarray(fc), FS), np.float64)
    expect = np.tan(np.pi * np.clip(fc, 10.0, 0.49 * FS) / FS)
    # rtol 1e-5: float32 rounding of the argument pi fc / fs (6e-8 relative) times tan's
    # condition number x (1 + tan^2) / tan, which is ~50 at 0.49 fs
    np.testing.assert_allclose(got, expect, rtol=1e-5)


def test_constant_svf_matches_scipy_lfilter():
    x = np.random.default_rng(0).uniform(-1, 1, N)
    got = run_svf(x, SETTINGS)
    for j, (kind, fc, q) in enumerate(SETTINGS):
        b, a = scipy_biquad(kind, fc, q)
        assert np.all(np.abs(np.roots(a)) < 1.0)  # the reference itself is stable
        ref = signal.lfilter(b, a, x)
        # Error relative to the output's peak. Measured: <= 2e-6 for every cutoff up to 8 kHz
        # (float32 rounding of a stable recurrence), so the 1e-4 holds with margin.
        # Within 1% of fs/2 (g = tan(pi fc / fs) ~ 31) the float32 TPT update cancels large
        # terms: measured 2.7e-5 at Q 0.5 and 1.2e-4 (-78 dB) at Q 12, the synth's own corner
        # (cutoff 16 kHz clips to 0.49 fs); those two are held to 3e-4 instead.
        err = np.max(np.abs(got[:, j] - ref)) / np.max(np.abs(ref))
        assert err < (3e-4 if fc > 0.48 * FS else 1e-4), (kind, fc, q, err)
        if fc <= 8000.0:
            assert err < 1e-5, (kind, fc, q, err)


def test_magnitude_at_cutoff_is_the_design():
    # Impulse response long enough for the slowest pole (fc 40 Hz, Q 12: time constant
    # 2Q / w = 2100 samples) to decay by e^-15, then its DTFT at exactly fc.
    n = 1 << 15
    settings = [(t, fc, q) for t in FILTER_TYPES for fc, q in
                [(40.0, 12.0), (440.0, 0.707), (2000.0, 3.0), (9000.0, 0.5), (10000.0, 12.0)]]
    x = np.zeros(n)
    x[0] = 1.0
    h = run_svf(x, settings)
    for j, (kind, fc, q) in enumerate(settings):
        mag = np.abs(np.sum(h[:, j] * np.exp(-2j * np.pi * fc / FS * np.arange(n))))
        design = q if kind != "bandpass" else 1.0
        # the issue asks for 1 dB; the pre-warped bilinear transform maps the analog response at
        # fc exactly, so the float32 filter is held to 0.01 dB
        assert abs(20 * np.log10(mag / design)) < 0.01, (kind, fc, q, mag, design)
        # and the whole response agrees with scipy's freqz of the same biquad
        b, a = scipy_biquad(kind, fc, q)
        w, resp = signal.freqz(b, a, worN=512, fs=FS)
        ours = np.fft.rfft(h[:, j])[np.round(w * n / FS).astype(int)]
        ref = signal.freqz(b, a, worN=np.round(w * n / FS) * FS / n, fs=FS)[1]
        np.testing.assert_allclose(np.abs(ours), np.abs(ref), atol=1e-4 * max(1.0, q))


def numpy_tpt_svf(x, g, k, mix):
    """Float64 reference: Zavalishin's TPT SVF, per-sample coefficients, one voice."""
    s1 = s2 = 0.0
    y = np.empty(len(x))
    for n in range(len(x)):
        hp = (x[n] - (g[n] + k) * s1 - s2) / (1 + g[n] * (g[n] + k))
        bp = g[n] * hp + s1
        lp = g[n] * bp + s2
        s1, s2 = 2 * bp - s1, 2 * lp - s2
        y[n] = mix[0] * lp + mix[1] * k * bp + mix[2] * hp
    return y


def swept_inputs(n: int, voices: int, seed: int):
    """White noise and a cutoff that sweeps 40 Hz .. 16 kHz (clipped at 0.49 fs) several
    times, Q from 0.5 to 12, all three types."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, voices)).astype(np.float32)
    t = np.arange(n)[:, None] / FS
    rate = rng.uniform(2, 40, voices)
    fc = 40.0 * (16000 / 40) ** (0.5 + 0.5 * np.sin(2 * np.pi * rate * t))
    g = np.tan(np.pi * np.clip(fc, 10, 0.49 * FS) / FS).astype(np.float32)
    k = (1 / np.geomspace(0.5, 12.0, voices)).astype(np.float32)
    mix = np.eye(3, dtype=np.float32)[np.arange(voices) % 3]
    return x, g, k, mix


def test_time_varying_svf_matches_float64_tpt_reference():
    x, g, k, mix = swept_inputs(N, 6, 1)
    got = np.asarray(_svf(jnp.asarray(x), jnp.asarray(g), jnp.asarray(k), jnp.asarray(mix)))
    for v in range(6):
        ref = numpy_tpt_svf(x[:, v].astype(np.float64), g[:, v].astype(np.float64), float(k[v]), mix[v])
        err = np.max(np.abs(got[:, v] - ref)) / np.max(np.abs(ref))
        # measured <= 5.1e-5 of the peak (Q 12 sweeping towards fs/2); 2e-4 leaves margin
        assert err < 2e-4, (v, err)


def test_associative_scan_matches_sequential_scan():
    x, g, k, mix = swept_inputs(1024, 6, 2)  # 1024 samples: its compile grows with log2(n)
    args = (jnp.asarray(x), jnp.asarray(g), jnp.asarray(k), jnp.asarray(mix))
    a, b = np.asarray(_svf(*args)), np.asarray(_svf_assoc(*args))
    # Measured max |difference| / peak: 1.0e-4 (1024 samples), 1.4e-4 (4096); vs float64 the
    # associative form is off by up to 1.9e-4, the sequential scan by 5e-5: the tree of 2x2
    # matrix products rounds more. 1e-3 bounds it with margin; any algebra slip is O(1).
    err = np.max(np.abs(a - b), axis=0) / np.max(np.abs(a), axis=0)
    assert np.all(err < 1e-3), err


def test_stable_at_high_q_and_extreme_cutoffs():
    # Q 12 at the lowest (10 Hz floor) and highest (0.49 fs) cutoffs and a cutoff that jumps
    # between them every 64 samples: finite, bounded, and the impulse tail dies out.
    n = 1 << 16  # 3 s: 7.8 time constants (2 Q / w) of the 10 Hz, Q 12 pole
    settings = [(t, fc, 12.0) for t in FILTER_TYPES for fc in (10.0, 0.49 * FS)]
    x = np.zeros(n)
    x[0] = 1.0
    h = run_svf(x, settings)
    assert np.all(np.isfinite(h))
    for j in range(len(settings)):
        assert np.max(np.abs(h[-1000:, j])) < 1e-2 * np.max(np.abs(h[:, j])), settings[j]
    x, _, k, mix = swept_inputs(n, 3, 3)
    jump = np.where((np.arange(n) // 64) % 2 == 0, svf_g(10.0, FS), svf_g(0.49 * FS, FS))
    g = np.broadcast_to(np.asarray(jump, np.float32)[:, None], (n, 3))
    y = np.asarray(_svf(jnp.asarray(x), jnp.asarray(g), jnp.full(3, 1 / 12.0), jnp.asarray(mix)))
    assert np.all(np.isfinite(y))
    # bounded: the input is in [-1, 1] and a jump resets nothing; the worst gain of a Q-12
    # resonance is ~Q, so 4 Q is generous while still catching any instability (which grows
    # exponentially)
    assert np.max(np.abs(y)) < 4 * 12.0, np.max(np.abs(y))
