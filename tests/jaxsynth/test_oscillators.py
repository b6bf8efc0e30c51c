"""Tests for jaxsynth/oscillators.py.

References: np.sin in float64; the Fourier series of the ideal waveforms (a saw's harmonics
lie at k f0 only, so energy anywhere else in a spectrum is aliasing); the closed-form levels
and duty cycle of a pulse. Phases are computed exactly in float64 and passed in as float32,
so these tests judge the waveform functions alone (the synth's phase accumulation and pitch
are tested through ``render`` in test_synth.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsynth import oscillators as O

FS = 22050
N_ALIAS = 1 << 15


def phases(freq_hz: float, n: int, fs: int = FS) -> np.ndarray:
    return ((np.arange(n) * (freq_hz / fs)) % 1.0).astype(np.float32)


_saw = jax.jit(O.saw)
_pulse = jax.jit(O.pulse)
_morph = jax.jit(O.morph)


def test_polynomial_sine_matches_np_sin():
    p = np.linspace(0, 1, 1 << 16, endpoint=False).astype(np.float32)
    y = np.asarray(O.sine(jnp.asarray(p)), np.float64)
    # 5e-4: the degree-7 least-squares fit's own max error is 4.0e-4 (float64), float32
    # evaluation adds ~1e-7. At that level its harmonics are below -70 dB (checked next).
    np.testing.assert_allclose(y, np.sin(2 * np.pi * p.astype(np.float64)), atol=5e-4, rtol=0)
    spectrum = np.abs(np.fft.rfft(y)) / (len(p) / 2)
    assert abs(spectrum[1] - 1.0) < 1e-4
    assert 20 * np.log10(spectrum[2:20].max()) < -70.0
    # exact zeros at 0 and 1/2 cycle, odd symmetry around them
    np.testing.assert_array_equal(np.asarray(O.sine(jnp.asarray([0.0, 0.5], jnp.float32))), 0.0)


@pytest.mark.parametrize("name, fn, amp1", [
    ("sine", O.sine, 1.0),
    ("triangle", O.triangle, 8 / np.pi**2),
    ("saw", lambda p: O.saw(p, 1e-7), 2 / np.pi),
    ("square", lambda p: O.pulse(p, 1e-7, 0.5), 4 / np.pi),
])
def test_shapes_are_phase_aligned_with_the_sine(name, fn, amp1):
    # Fourier series of the ideal waveforms: fundamental amplitudes 1, 8/pi^2, 2/pi, 4/pi,
    # all in phase with sin(2 pi phase) so a morph never cancels the fundamental.
    n = 1 << 14
    y = np.asarray(fn(jnp.asarray(np.arange(n, dtype=np.float32) / n)), np.float64)
    c1 = np.fft.rfft(y)[1] / (n / 2)  # sin(2 pi p) -> -1j
    np.testing.assert_allclose(c1, -1j * amp1, atol=2e-3)  # 2e-3: edges of the tiny-dt BLEPs


def test_morph_endpoints_equal_the_pure_waveforms():
    p = jnp.asarray(phases(331.0, 4096))
    dt = jnp.float32(331.0 / FS)
    width = jnp.float32(0.3)
    pure = {0.0: O.sine(p), 1 / 3: O.triangle(p), 2 / 3: O.saw(p, dt), 1.0: O.pulse(p, dt, width)}
    for position, expect in pure.items():
        w = O.morph_weights(jnp.float32(position))
        got = _morph(p, dt, w, width)
        # 1e-6: the morph sums the same terms with the other weights exactly 0; 1/3 and 2/3
        # are not exact in float32, so the neighbours' weights are ~1e-7.
        np.testing.assert_allclose(np.asarray(got), np.asarray(expect), atol=1e-6, err_msg=str(position))


def test_morph_weights_are_a_partition_of_unity():
    s = jnp.linspace(-0.2, 1.2, 141)
    w = np.asarray(O.morph_weights(s))
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-6)
    assert (w >= 0).all() and ((w > 0).sum(-1) <= 2).all()  # two neighbours at a time
    # halfway between saw and pulse: equal weights
    np.testing.assert_allclose(np.asarray(O.morph_weights(jnp.float32(5 / 6))), [0, 0, 0.5, 0.5], atol=1e-6)


@pytest.mark.parametrize("width", [0.05, 0.25, 0.5, 0.8])
def test_pulse_width_sets_duty_cycle_levels_and_no_dc(width):
    # f0 = fs / 100: exactly 100 samples per period, 40 periods. The pulse is
    # saw(a) - saw(a + w): +2(1 - w) for a fraction w of the cycle and -2w otherwise, so its
    # mean is 0 for any width (closed form) and its duty cycle is w.
    n_per, periods = 100, 40
    p = jnp.asarray(phases(FS / n_per, n_per * periods))
    y = np.asarray(_pulse(p, jnp.float32(1 / n_per), jnp.float32(width)), np.float64)
    high = y > 0
    # duty cycle to 2 samples per period: each of the 2 BLEP-smoothed edges may count either way
    assert abs(high.mean() - width) <= 2 / n_per
    assert abs(y.mean()) < 1e-5  # DC-free: mean over whole periods
    away = np.abs(np.diff(y, prepend=y[-1])) < 1e-3  # skip the BLEP-smoothed edge samples
    np.testing.assert_allclose(y[away & high], 2 * (1 - width), atol=1e-5)
    np.testing.assert_allclose(y[away & ~high], -2 * width, atol=1e-5)


def aliasing_db(x: np.ndarray, f0: float, below_hz: float = FS / 2) -> float:
    """Energy off the harmonics k f0 (< fs/2), relative to the harmonic energy, in dB, counting
    off-harmonic energy below ``below_hz``. Blackman window: sidelobes < -58 dB, main lobe
    +-3 bins; a harmonic owns +-6 bins."""
    spec = np.abs(np.fft.rfft(x * np.blackman(len(x)))) ** 2
    f = np.fft.rfftfreq(len(x), 1 / FS)
    harmonic = f < 20.0
    for k in range(1, int(FS / 2 / f0) + 1):
        harmonic |= np.abs(f - k * f0) < 6 * FS / len(x)
    return 10 * np.log10(spec[~harmonic & (f < below_hz)].sum() / spec[harmonic].sum())


@pytest.mark.parametrize("note", [96, 100])
def test_polyblep_saw_aliases_far_less_than_naive(note):
    # A high note whose aliases fall between its harmonics (fs / f0 is not an integer).
    # Measured (float64 phase, 2**15 samples): full band, the 2-point PolyBLEP saw's aliasing is
    # 16.7 dB (note 96) / 17.5 dB (note 100) below the naive saw's; below 5 kHz, where aliases
    # are not masked by the dense high harmonics, 36.9 / 33.8 dB below. 2-point PolyBLEP
    # cannot reach 30 dB over the full band (its residual aliases sit just below fs/2); the
    # thresholds leave ~2 dB for float32 and library changes.
    f0 = 440.0 * 2 ** ((note - 69) / 12)
    p = jnp.asarray(phases(f0, N_ALIAS))
    blep = np.asarray(_saw(p, jnp.float32(f0 / FS)), np.float64)
    naive = np.asarray(O.naive_saw(p), np.float64)
    full = aliasing_db(naive, f0) - aliasing_db(blep, f0)
    low = aliasing_db(naive, f0, 5000.0) - aliasing_db(blep, f0, 5000.0)
    assert full >= 15.0, full
    assert low >= 30.0, low
    # The band-limited saw keeps the ideal harmonic amplitudes 2 / (pi k), less the BLEP's
    # gentle low-pass. Amplitude at exactly k f0 by a Hann-windowed DTFT (no scalloping).
    # Measured droop, a function of frequency alone: -0.26 dB at 2.1 kHz, -1.0 at 4.2 kHz,
    # -1.7 at 5.3 kHz, -7 dB near fs/2. Bounds: 0.5 dB at the fundamental, 2 dB below fs/4.
    w = np.hanning(N_ALIAS)
    t = np.arange(N_ALIAS) / FS
    for k in range(1, int(FS / 4 / f0) + 1):
        amp = 2 * np.abs(np.sum(blep * w * np.exp(-2j * np.pi * k * f0 * t))) / w.sum()
        droop_db = 20 * np.log10(amp * np.pi * k / 2)
        assert -(0.5 if k == 1 else 2.0) < droop_db < 0.05, (k, droop_db)


def test_white_noise_is_uniform_white_and_seeded():
    n = 1 << 14
    seeds = jnp.asarray([1, 2, 3], jnp.uint32)
    x = np.asarray(O.white_noise(seeds, n), np.float64)
    assert x.shape == (n, 3) and x.min() >= -1.0 and x.max() < 1.0
    # uniform on [-1, 1): mean 0 and variance 1/3; 5 standard errors of n samples
    np.testing.assert_allclose(x.mean(0), 0.0, atol=5 * np.sqrt(1 / 3 / n))
    np.testing.assert_allclose(x.var(0), 1 / 3, atol=5 * np.sqrt(1 / 45 / n))
    # white: lag-1..3 autocorrelation and cross-correlation between seeds ~ N(0, 1/n)
    for lag in (1, 2, 3):
        r = np.mean(x[lag:] * x[:-lag], 0) / x.var(0)
        assert np.all(np.abs(r) < 5 / np.sqrt(n)), (lag, r)
    assert abs(np.corrcoef(x[:, 0], x[:, 1])[0, 1]) < 5 / np.sqrt(n)
    np.testing.assert_array_equal(np.asarray(O.white_noise(seeds, n)), x.astype(np.float32))
