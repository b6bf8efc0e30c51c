"""Tests for jaxsynth/synth.py: the voice end to end.

References: the MIDI tuning formula 440 * 2 ** ((note - 69) / 12) checked against the
spectrum peak of a rendered sine (zero-padded FFT, parabolic interpolation); scipy.signal's
bilinear biquads for the filter types' spectra (Welch estimate of filtered noise); the
documented output bound 10 ** (gain_db / 20) * velocity; jax.monitoring compile events for
recompilation.

Cost: every distinct (function, shape) compiles the whole voice (seconds on a 2-core CPU), so
the file uses exactly five: ``render`` (batch 1), ``render_batch`` at batch 64, one
jit(vmap(value_and_grad)) at batch 4, and ``render_batch`` at batches 9 and 10 with the CPU
chunk size lowered to 4 (the chunked path without a batch of 257). Batch invariance is checked at 64, not 1024 (STYLE.md):
compiling and running batch 1024 costs ~20 s here, over this file's budget.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from jaxsynth import params as P
from jaxsynth import synth
from jaxsynth.params import PresetError
from jaxsynth.synth import SynthConfig, render, render_batch

CFG = SynthConfig()
SR, T = CFG.sample_rate, CFG.num_samples
B = 64
CONTINUOUS = np.flatnonzero(~P.IS_DISCRETE)
DISCRETE = np.flatnonzero(P.IS_DISCRETE)


def preset(**physical) -> np.ndarray:
    """A normalized preset from physical values (dots in names written as '__')."""
    return np.array(P.preset_from_dict({k.replace("__", "."): v for k, v in physical.items()},
                                       fill_defaults=True))


# A plain sine: one voice, no noise, filter wide open, no modulation, held for the whole clip.
SINE = dict(osc1__shape=0.0, osc1__level=1.0, osc2__level=0.0, noise__level=0.0,
            filter__cutoff_hz=16000.0, filter__resonance_q=0.707, amp_env__attack_s=0.001,
            amp_env__sustain=1.0, output__gain_db=0.0)
# Filtered noise only, for the filter-type spectra (noise at 0.3 keeps the tanh nearly linear).
NOISE = dict(osc1__level=0.0, osc2__level=0.0, noise__level=0.3, filter__cutoff_hz=1000.0,
             filter__resonance_q=0.707, amp_env__attack_s=0.001, amp_env__sustain=1.0,
             output__gain_db=0.0)


def batch_presets() -> np.ndarray:
    """Rows 0/1: all-zeros / all-ones corners; 2-4: noise through LP/BP/HP; 5-7: more corners
    (every module at 0 except one at 1); the rest uniform random presets."""
    rows = [np.zeros(P.N_PARAMS, np.float32), np.ones(P.N_PARAMS, np.float32)]
    rows += [preset(**NOISE, filter__type=t) for t in ("lowpass", "bandpass", "highpass")]
    pm = P.MODULE_PARAMS.astype(np.float32)
    rows += [pm[P.MODULES.index(m)] for m in ("filter", "lfo", "output")]
    rand = np.asarray(P.sample_params01(jax.random.key(0), np.ones(P.N_MODULES, bool),
                                        shape=(B - len(rows),)))
    return np.concatenate([np.stack(rows), rand]).astype(np.float32)


@pytest.fixture(scope="module")
def batch():
    """One render_batch call at batch 64 with per-sound notes, velocities and note lengths."""
    params = batch_presets()
    keys = jax.random.split(jax.random.key(42), B)
    rng = np.random.default_rng(0)
    notes = rng.uniform(24, 108, B).astype(np.float32)
    vel = rng.uniform(0.1, 1.0, B).astype(np.float32)
    vel[:8] = 1.0
    notes[:8] = 60.0
    length = rng.uniform(0.05, 0.5, B).astype(np.float32)
    length[:8] = 0.5
    audio = np.asarray(render_batch(params, keys, CFG, note=notes, velocity=vel, note_length_s=length))
    return dict(params=params, keys=keys, notes=notes, vel=vel, length=length, audio=audio)


def one(p, key=jax.random.key(0), **kw) -> np.ndarray:
    return np.asarray(render(jnp.asarray(p), key, CFG, **kw))


# ----------------------------------------------------------------- safety, bounds, shapes

def test_batch_is_finite_and_within_the_documented_bound(batch):
    audio = batch["audio"]
    assert audio.shape == (B, T) and audio.dtype == np.float32
    assert np.all(np.isfinite(audio))
    gain = 10 ** (np.asarray(P.denormalize(jnp.asarray(batch["params"])))[:, P.INDEX["output.gain_db"]] / 20)
    bound = gain * batch["vel"]
    peak = np.max(np.abs(audio), axis=1)
    # rtol 1e-6: the bound is a product of factors each <= 1 (tanh, envelopes, tremolo) and a
    # float32 gain; rounding can add ~2 ulps
    assert np.all(peak <= bound * (1 + 1e-6)), np.max(peak / bound)
    # most random presets are audible (a preset with a closed filter or a 0 level may not be)
    assert np.mean(peak > 1e-3 * bound) > 0.8
    assert peak[1] > 0.0  # the all-ones corner sounds


def test_render_shape_dtype_and_jit_vmap(grads):
    assert one(P.DEFAULT_PARAMS01).shape == (T,)
    audio = grads["audio"]  # from jax.jit(jax.vmap(value_and_grad(...))) over 4 presets
    assert audio.shape == (4, T) and audio.dtype == np.float32
    # the traced render (vmap under jit) gives the eager render's audio: 1e-5 of full scale,
    # as for batch invariance below
    for i in range(4):
        np.testing.assert_allclose(audio[i], one(grads["params"][i], grads["keys"][i], note=64.0),
                                   atol=1e-5)


def test_a_sound_alone_equals_it_inside_a_batch(batch):
    # Batch invariance: every row of the batch of 64 (with its own note, velocity and length)
    # vs render() of that row alone. Not bit-exact: XLA compiles a batch of 1 and of 64 into
    # differently vectorized loops (FMA contraction, polynomial tanh/exp2 paths), and the
    # voice amplifies those last-bit differences - most where a Q-12 filter sits near fs/2
    # (the float32 filter is only good to 1.2e-4 there, test_filters.py) followed by 24 dB of
    # drive. Measured (abs, full scale 1; render of commit 93c7c94): median over rows 1.3e-7,
    # 5 of 64 rows bit-identical, 33 > 1e-7, worst 8.4e-5 at the all-ones corner (Q 12,
    # cutoff 0.49 fs, drive 24 dB); the unfused render before it: worst 1.2e-4, next 1.8e-5.
    # Bounds: every row 5e-4 (-66 dB), median 1e-5; mixing sounds across the batch or a
    # wrong key/note per row would be O(0.01-1).
    diffs = []
    for i in range(B):
        alone = one(batch["params"][i], batch["keys"][i], note=float(batch["notes"][i]),
                    velocity=float(batch["vel"][i]), note_length_s=float(batch["length"][i]))
        diffs.append(np.max(np.abs(batch["audio"][i] - alone)))
    diffs = np.asarray(diffs)
    assert diffs.max() < 5e-4, (diffs.argmax(), diffs.max())
    assert np.median(diffs) < 1e-5, np.median(diffs)


def test_a_batch_rendered_in_chunks_equals_it_rendered_whole(batch, monkeypatch):
    # On a CPU, render_batch orders a batch larger than CPU_BATCH_CHUNK by unison voice count
    # and renders it in equal chunks, one after another, each computing only the voices its
    # sounds use; with the chunk set to 4, 9 sounds render as 3 chunks of 3 (no padding) and 10
    # as 3 chunks of 4 with 2 padded rows dropped. Each row must be its own sound in its own
    # place: same bounds as batch invariance above (different compiled batch sizes), while a
    # row out of place or a skipped voice that sounds would differ by O(0.01-1).
    monkeypatch.setattr(synth, "CPU_BATCH_CHUNK", 4)
    for n in (9, 10):
        rows = slice(B - n, B)  # random presets, own notes, velocities and note lengths
        voices = np.sort(np.asarray(P.choice_index(jnp.asarray(batch["params"][rows]), "unison.voices")))
        assert voices[3] < P.MAX_UNISON - 1  # the first chunk skips voices
        assert len(set(voices)) > 1  # the ordering moves rows
        audio = np.asarray(render_batch(batch["params"][rows], batch["keys"][rows], CFG,
                                        note=batch["notes"][rows], velocity=batch["vel"][rows],
                                        note_length_s=batch["length"][rows]))
        assert audio.shape == (n, T)
        diffs = np.max(np.abs(audio - batch["audio"][rows]), axis=1)
        assert diffs.max() < 5e-4 and np.median(diffs) < 1e-5, diffs



def test_render_batch_map_hands_each_chunk_and_its_rows_to_the_consumer(batch, monkeypatch):
    # render_batch_map: the consumer gets each CPU chunk's audio with the same rows of `extra`
    # (here each sound's index and a per-sound scale) and its per-row results come back in the
    # batch's order. 10 sounds in chunks of 4 (3 chunks of 4, 2 padded rows dropped), reordered
    # by voice count: the returned indices must be 0..9 exactly, and the scaled audio within the
    # batch-invariance bounds above of the batch rendered whole times the scale.
    monkeypatch.setattr(synth, "CPU_BATCH_CHUNK", 4)
    rows = slice(B - 10, B)
    scale = np.linspace(0.5, 2.0, 10).astype(np.float32)
    consume = lambda audio, index, s: (index, audio * s[:, None], jnp.full(index.shape, audio.shape[0]))
    index, scaled, seen = jax.jit(lambda *a: synth.render_batch_map(consume, *a[:2], CFG, *a[2:5], a[5:]))(
        batch["params"][rows], batch["keys"][rows], batch["notes"][rows], batch["vel"][rows],
        batch["length"][rows], jnp.arange(10), jnp.asarray(scale))
    np.testing.assert_array_equal(np.asarray(index), np.arange(10))
    np.testing.assert_array_equal(np.asarray(seen), 4)  # the consumer saw chunks, not the batch
    diffs = np.max(np.abs(np.asarray(scaled) - batch["audio"][rows] * scale[:, None]), axis=1)
    assert diffs.max() < 2 * 5e-4 and np.median(diffs) < 2 * 1e-5, diffs

# ----------------------------------------------------------------- determinism and noise

def test_same_key_is_bit_identical_and_noise_follows_the_key():
    p = preset(osc1__level=0.0, noise__level=1.0, filter__cutoff_hz=16000.0)
    a1, a2 = one(p, jax.random.key(1)), one(p, jax.random.key(1))
    np.testing.assert_array_equal(a1, a2)
    b = one(p, jax.random.key(2))
    assert not np.array_equal(a1, b)
    # independent noise: correlation ~ N(0, 1/n) for n = 11025 samples -> |r| < 0.05 (5 sigma)
    r = np.corrcoef(a1[T // 10:], b[T // 10:])[0, 1]
    assert abs(r) < 0.05, r
    assert np.std(a1) > 0.05


# ----------------------------------------------------------------- pitch, note, velocity

def spectral_peak_hz(x: np.ndarray) -> float:
    """Peak of a Hann-windowed, 2**20-point zero-padded spectrum, refined by a parabola
    through the log magnitudes of the peak bin and its neighbours."""
    n = 1 << 20
    mag = np.log(np.abs(np.fft.rfft(x * np.hanning(len(x)), n)) + 1e-12)
    k = int(np.argmax(mag))
    a, b, c = mag[k - 1:k + 2]
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * SR / n


def cents(f, ref):
    return 1200 * np.log2(f / ref)


@pytest.mark.parametrize("note, coarse, fine", [(33, "0", 0.0), (69, "0", 0.0), (60, "7", 37.0),
                                                (100, "-12", -25.0), (108.5, "0", 0.0)])
def test_pitch_within_one_cent_of_midi_frequency(note, coarse, fine):
    # Reference: 440 * 2 ** ((note + coarse + fine / 100 - 69) / 12). A 0.5 s Hann window has
    # a 2 Hz bin; the 2**20-point padding puts the spectrum every 0.02 Hz and the parabola
    # refines it, so the estimate's own error is < 0.1 cent even at 55 Hz (1 cent = 0.03 Hz).
    p = preset(**SINE, osc1__coarse_st=coarse, osc1__fine_cents=fine)
    audio = one(p, note=float(note), note_length_s=0.5)
    expect = 440.0 * 2 ** ((note + int(coarse) + fine / 100 - 69) / 12)
    got = spectral_peak_hz(audio)
    assert abs(cents(got, expect)) < 1.0, (got, expect, cents(got, expect))


def test_note_changes_pitch_by_the_equal_tempered_ratio():
    p = preset(**SINE)
    f = [spectral_peak_hz(one(p, note=n, note_length_s=0.5)) for n in (57.0, 69.0, 76.0)]
    assert abs(cents(f[1] / f[0], 2.0)) < 1.0  # an octave
    assert abs(cents(f[2] / f[1], 2 ** (7 / 12))) < 1.0  # a fifth


def test_velocity_scales_the_output_linearly():
    p = preset(osc1__level=0.7, noise__level=0.2)
    full = one(p, velocity=1.0)
    np.testing.assert_allclose(one(p, velocity=0.5), 0.5 * full, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(one(p, velocity=0.0), 0.0)


def test_note_length_sets_the_release():
    p = preset(osc1__level=1.0, amp_env__attack_s=0.001, amp_env__sustain=1.0,
               amp_env__release_s=0.05)
    audio = one(p, note_length_s=0.2)
    off, end = int(0.2 * SR), int(0.25 * SR) + 1
    assert np.max(np.abs(audio[off - 500:off])) > 0.1  # sounding before the note-off
    np.testing.assert_array_equal(audio[end:], 0.0)  # silent one release time after it
    # the release is the envelope's linear ramp: the level 25 ms after note-off is about half
    # the level before (peak over one period of the 262 Hz tone, ~84 samples)
    mid = int(0.225 * SR)
    before = np.max(np.abs(audio[off - 84:off]))
    during = np.max(np.abs(audio[mid - 42:mid + 42]))
    assert 0.35 < during / before < 0.65, during / before


# ----------------------------------------------------------------- unison, filter type

def test_unison_voice_count_changes_the_sound_and_masked_voices_are_silent():
    base = dict(SINE, osc1__shape=2 / 3, unison__detune_cents=20.0)
    single, four = preset(**base, unison__voices="1"), preset(**base, unison__voices="4")
    # with one voice the other three (whose start phases come from the key) contribute
    # nothing: the audio does not depend on the key at all (there is no noise)
    np.testing.assert_array_equal(one(single, jax.random.key(1)), one(single, jax.random.key(2)))
    a, b = one(four, jax.random.key(1)), one(four, jax.random.key(2))
    assert not np.allclose(a, b, atol=1e-3)  # voices 2-4 are heard, with key-drawn phases
    assert np.max(np.abs(one(single) - a)) > 0.05
    # detuned voices beat: a 4-voice saw's fundamental region spreads over +-20 cents
    spec1 = np.abs(np.fft.rfft(one(single) * np.hanning(T)))
    spec4 = np.abs(np.fft.rfft(a * np.hanning(T)))
    f0_bin = int(round(261.63 * T / SR))
    peak_bins = lambda s: np.sum(s[f0_bin - 10:f0_bin + 11] > 0.2 * s[f0_bin - 10:f0_bin + 11].max())
    assert peak_bins(spec4) > peak_bins(spec1)


def test_filter_types_give_lowpass_bandpass_highpass_spectra(batch):
    # Noise through the synth's filter at 1 kHz, Q 0.707, vs |H|^2 of scipy's bilinear biquad,
    # both normalised to their passband (LP at 125 Hz, BP at 1 kHz, HP at 8 kHz).
    # +-3 dB: the Welch estimate over ~40 segments varies by ~+-0.7 dB and the tanh drive
    # stage at this level compresses peaks by < 1 dB.
    w0 = 2 * SR * np.tan(np.pi * 1000.0 / SR)
    den = [1.0, w0 / 0.707, w0 * w0]
    nums = {"lowpass": [0, 0, w0 * w0], "bandpass": [0, w0 / 0.707, 0], "highpass": [1, 0, 0]}
    probe = np.array([125.0, 250.0, 1000.0, 4000.0, 8000.0])
    ref_at = {"lowpass": 125.0, "bandpass": 1000.0, "highpass": 8000.0}
    for row, kind in zip((2, 3, 4), ("lowpass", "bandpass", "highpass")):
        f, pxx = signal.welch(batch["audio"][row][SR // 20:], SR, nperseg=512)
        b, a = signal.bilinear(nums[kind], den, SR)
        _, h = signal.freqz(b, a, worN=f, fs=SR)
        at = lambda x, fr: x[np.argmin(np.abs(f - fr))]
        for fr in probe:
            ours = 10 * np.log10(at(pxx, fr) / at(pxx, ref_at[kind]))
            design = 20 * np.log10(np.abs(at(h, fr)) / np.abs(at(h, ref_at[kind])))
            if design > -30:  # below that, the noise floor of the estimate dominates
                assert abs(ours - design) < 3.0, (kind, fr, ours, design)


# ----------------------------------------------------------------- gradients

def spectral_loss(audio, target):
    """L1 of log power + L1 of magnitude of a 512-point STFT (hop 128)."""
    frames = jnp.stack([audio[i:i + 512] for i in range(0, T - 512, 128)]) * jnp.hanning(512)
    tframes = jnp.stack([target[i:i + 512] for i in range(0, T - 512, 128)]) * jnp.hanning(512)
    spec = lambda x: jnp.fft.rfft(x)
    power = lambda s: jnp.real(s) ** 2 + jnp.imag(s) ** 2 + 1e-8
    pa, pt = power(spec(frames)), power(spec(tframes))
    return jnp.mean(jnp.abs(jnp.log(pa) - jnp.log(pt))) + jnp.mean(jnp.abs(jnp.sqrt(pa) - jnp.sqrt(pt)))


def grad_presets() -> np.ndarray:
    """Four presets where every module is audible: both oscillators, noise, 3 detuned voices,
    filter envelope/key tracking (note 64), LFO to pitch/cutoff/amp, drive; shapes in the
    saw-pulse range (so pulse width matters) and all three filter types."""
    base = dict(osc1__shape=0.8, osc1__level=0.7, osc2__shape=0.9, osc2__level=0.5,
                osc2__coarse_st="7", noise__level=0.2, unison__voices="3", unison__detune_cents=15.0,
                filter__cutoff_hz=1500.0, filter__resonance_q=2.0, filter__key_track=0.5,
                filter__env_amount_oct=1.5, filter_env__attack_s=0.05, filter_env__decay_s=0.1,
                filter_env__sustain=0.5, filter_env__release_s=0.1, amp_env__attack_s=0.02,
                amp_env__decay_s=0.1, amp_env__sustain=0.7, amp_env__release_s=0.1,
                lfo__rate_hz=3.0, lfo__to_pitch_st=0.5, lfo__to_cutoff_oct=1.0, lfo__to_amp=0.3,
                output__drive_db=6.0, output__gain_db=-6.0)
    rows = []
    rng = np.random.default_rng(1)
    for i, (ftype, lshape) in enumerate([("lowpass", "sine"), ("bandpass", "triangle"),
                                         ("highpass", "saw"), ("lowpass", "square")]):
        u = preset(**base, filter__type=ftype, lfo__shape=lshape)
        if i:  # jitter the continuous parameters a little
            u[CONTINUOUS] = np.clip(u[CONTINUOUS] + rng.uniform(-0.08, 0.08, CONTINUOUS.size), 0.02, 0.98)
        rows.append(u)
    return np.stack(rows).astype(np.float32)


def _grad_fn(params, keys, target, weights):
    """jit(vmap(jacrev)) of two losses per preset: the spectral distance to ``target`` and a
    linear functional sum(audio * weights) / 100 (smooth in every parameter, so finite
    differences can check its gradient). Returns ((4, 2, N_PARAMS) jacobians, (losses, audio)).

    Compiled with LLVM optimisation level 0: the reverse pass of the whole voice takes ~26 s
    of CPU to compile at the default level and ~15 s at 0, and runs in < 1 s either way
    (HLO-level passes, which decide the numerics, run at both levels)."""
    def losses(p, key):
        audio = render(p, key, CFG, note=64.0)
        out = jnp.stack([spectral_loss(audio, target), jnp.sum(audio * weights) / 100.0])
        return out, (out, audio)

    return (jax.jit(jax.vmap(jax.jacrev(losses, has_aux=True)))
            .lower(jnp.asarray(params), keys).compile({"xla_backend_optimization_level": 0}))


@pytest.fixture(scope="module")
def grads():
    params = grad_presets()
    keys = jax.random.split(jax.random.key(5), 4)
    target = jnp.asarray(one(preset(osc1__shape=0.5, filter__cutoff_hz=600.0), note=64.0))
    weights = jnp.asarray(np.random.default_rng(0).normal(size=T).astype(np.float32))
    fn = _grad_fn(params, keys, target, weights)
    jac, (value, audio) = fn(jnp.asarray(params), keys)
    return dict(params=params, keys=keys, fn=fn, value=np.asarray(value), audio=np.asarray(audio),
                g=np.asarray(jac)[:, 0], g_linear=np.asarray(jac)[:, 1])


def test_gradients_are_finite_and_nonzero_for_every_continuous_parameter(grads):
    g = grads["g"]
    assert g.shape == (4, P.N_PARAMS) and np.all(np.isfinite(g)) and np.all(np.isfinite(grads["value"]))
    # every continuous parameter audibly changes these sounds, so its gradient must not vanish
    # (in at least one of the four presets: e.g. pulse width is silent where the morph has no
    # pulse component); discrete parameters are snapped and have none
    dead = [P.NAMES[i] for i in CONTINUOUS if not np.any(np.abs(g[:, i]) > 1e-7)]
    assert not dead, dead
    np.testing.assert_array_equal(g[:, DISCRETE], 0.0)


def test_gradients_match_finite_differences(grads):
    # Directional derivatives of the linear functional along random directions over all
    # continuous parameters vs central differences (eps 1e-4 in normalized units). The
    # spectral loss is not used here: its log-magnitudes make it rugged in pitch at scales
    # below any usable eps. LFO rate is left out for presets 2 and 3 (saw and square LFO):
    # their jumps move with the rate, which a difference sees and a derivative does not.
    # Measured (4 trials x 4 presets): within 2 % where |g . d| > 1, and within 0.05 absolute
    # for small directional derivatives (float32 rounding of the loss, divided by 2 eps);
    # bound: 5 % of |g . d| plus 1e-3 |g| (|g| ~ 50-100 here, dominated by pitch).
    fn, params, keys, g = grads["fn"], grads["params"], grads["keys"], grads["g_linear"]
    assert np.all(np.isfinite(g))
    rng = np.random.default_rng(7)
    eps = 1e-4
    for trial in range(2):
        d = np.zeros((4, P.N_PARAMS), np.float32)
        d[:, CONTINUOUS] = rng.normal(size=(4, CONTINUOUS.size))
        d[2:, P.INDEX["lfo.rate_hz"]] = 0.0
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        _, (plus, _) = fn(jnp.asarray(params + eps * d), keys)
        _, (minus, _) = fn(jnp.asarray(params - eps * d), keys)
        fd = (np.asarray(plus)[:, 1] - np.asarray(minus)[:, 1]) / (2 * eps)
        analytic = np.sum(g * d, axis=1)
        tol = 0.05 * np.abs(analytic) + 1e-3 * np.linalg.norm(g, axis=1)
        assert np.all(np.abs(fd - analytic) <= tol), (trial, fd, analytic)


# ----------------------------------------------------------------- recompilation

def test_new_parameter_values_do_not_recompile(batch):
    # warm up both call patterns once (eager helpers such as broadcasting a scalar note
    # compile tiny kernels on first use), then only new values
    one(P.DEFAULT_PARAMS01)
    render_batch(batch["params"], batch["keys"], CFG, note=49.0)
    events = []
    listener = lambda name, secs, **kw: events.append(name)
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        rng = np.random.default_rng(3)
        for seed in range(3):
            one(rng.uniform(0, 1, P.N_PARAMS).astype(np.float32), jax.random.key(seed),
                note=float(40 + seed), velocity=0.5 + 0.1 * seed, note_length_s=0.1 * (seed + 1))
            render_batch(rng.uniform(0, 1, (B, P.N_PARAMS)).astype(np.float32),
                         jax.random.split(jax.random.key(seed), B), CFG, note=50.0 + seed)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    compiles = [e for e in events if e == "/jax/core/compile/backend_compile_duration"]
    assert not compiles, f"{len(compiles)} recompilation(s) for new parameter values"


# ----------------------------------------------------------------- bad input

@pytest.mark.parametrize("bad, exc, match", [
    (dict(params01=np.where(np.arange(P.N_PARAMS) == 14, np.nan, 0.5)), PresetError, r"NaN/Inf at \['filter\.cutoff_hz'\]"),
    (dict(params01=np.full(P.N_PARAMS, 1.5)), PresetError, r"must lie in \[0, 1\]"),
    (dict(params01=np.full(P.N_PARAMS - 1, 0.5)), PresetError, r"last axis 33.*\(32,\)"),
    (dict(params01=np.full((2, P.N_PARAMS), 0.5)), PresetError, r"use render_batch"),
    (dict(key=0), TypeError, r"PRNG key.*jax\.random\.key"),
    (dict(note=128.0), ValueError, r"note must be finite and within \[0\.0, 127\.0\]"),
    (dict(note=-1.0), ValueError, r"note must be"),
    (dict(note=float("nan")), ValueError, r"note must be"),
    (dict(velocity=1.5), ValueError, r"velocity must be finite and within \[0\.0, 1\.0\]"),
    (dict(note_length_s=-0.1), ValueError, r"note_length_s must be"),
])
def test_bad_render_input_raises_a_clear_error(bad, exc, match):
    kw = dict(params01=P.DEFAULT_PARAMS01, key=jax.random.key(0))
    kw.update(bad)
    with pytest.raises(exc, match=match):
        render(kw.pop("params01"), kw.pop("key"), CFG, **kw)


def test_bad_render_batch_input_raises_a_clear_error():
    p = np.tile(P.DEFAULT_PARAMS01, (4, 1))
    with pytest.raises(ValueError, match=r"one key per sound.*\(4,\).*got shape \(3,\)"):
        render_batch(p, jax.random.split(jax.random.key(0), 3))
    with pytest.raises(ValueError, match=r"one key per sound"):
        render_batch(p, jax.random.key(0))
    with pytest.raises(PresetError, match=r"\(batch, 33\)"):
        render_batch(P.DEFAULT_PARAMS01[None, None].repeat(4, 0), jax.random.split(jax.random.key(0), 4))
    with pytest.raises(ValueError, match=r"velocity must be"):
        render_batch(p, jax.random.split(jax.random.key(0), 4), velocity=np.array([1, 1, 2, 1.0]))


def test_traced_render_sanitizes_instead_of_raising(grads):
    # Under jit/vmap/grad render cannot raise; documented: NaN -> the default, out of range ->
    # clipped. Checked through the compiled jit(vmap(jacrev)) of the gradient tests.
    fn, params, keys = grads["fn"], grads["params"].copy(), grads["keys"]
    i, j = P.INDEX["filter.cutoff_hz"], P.INDEX["output.gain_db"]
    bad = params.copy()
    bad[0, i], bad[1, j], bad[2, j] = np.nan, 1.7, -3.0
    fixed = params.copy()
    fixed[0, i], fixed[1, j], fixed[2, j] = P.DEFAULT_PARAMS01[i], 1.0, 0.0
    _, (_, audio_bad) = fn(jnp.asarray(bad), keys)
    _, (_, audio_fixed) = fn(jnp.asarray(fixed), keys)
    assert np.all(np.isfinite(np.asarray(audio_bad)))
    np.testing.assert_array_equal(np.asarray(audio_bad), np.asarray(audio_fixed))


def test_traced_render_replaces_nan_note_velocity_and_length_by_their_defaults():
    # Before the guard one NaN note, velocity or note length made the whole clip NaN under jit.
    fn = jax.jit(lambda n, v, l: render(jnp.asarray(P.DEFAULT_PARAMS01), jax.random.key(3), CFG,
                                        note=n, velocity=v, note_length_s=l))
    default = np.asarray(fn(60.0, 1.0, CFG.default_note_length_s))
    for args in ((np.nan, 1.0, CFG.default_note_length_s), (60.0, np.nan, CFG.default_note_length_s),
                 (60.0, 1.0, np.nan)):
        audio = np.asarray(fn(*map(np.float32, args)))
        assert np.all(np.isfinite(audio)), args
        np.testing.assert_array_equal(audio, default, err_msg=str(args))
    held = np.asarray(fn(np.float32(60.0), np.float32(1.0), np.float32(np.inf)))
    assert np.all(np.isfinite(held)) and np.max(np.abs(held)) > 0.1


@pytest.mark.parametrize("call, exc, match", [
    (lambda k: render_batch([list(P.DEFAULT_PARAMS01)] * 2, jax.random.split(k, 2)), None, None),
    (lambda k: render_batch(np.zeros((0, P.N_PARAMS), np.float32), jax.random.split(k, 0)),
     PresetError, r"batch >= 1, got \(0, 33\)"),
    (lambda k: render(P.DEFAULT_PARAMS01, None), TypeError, r"PRNG key.*not NoneType"),
    (lambda k: render_batch(P.DEFAULT_PARAMS01[None], None), TypeError, r"PRNG key.*split"),
])
def test_lists_empty_batches_and_missing_keys_get_clear_answers(call, exc, match):
    # A Python list of presets renders like the array (it raised AttributeError); an empty
    # batch (ZeroDivisionError) and key=None (a TypeError from indexing None) name the fix.
    if exc is None:
        audio = np.asarray(call(jax.random.key(0)))
        assert audio.shape == (2, T) and np.all(np.isfinite(audio))
        return
    with pytest.raises(exc, match=match):
        call(jax.random.key(0))
