"""The voice: normalized parameters -> audio.

Signal graph (one mono note)::

    osc1 --+                  filter ADSR, key tracking, LFO
    osc2 --+-- mix --> SVF (LP/BP/HP) --> drive (tanh) --> x amp ADSR x LFO tremolo x gain
    noise -+
    (each oscillator: MAX_UNISON detuned voices, morph sine/triangle/saw/pulse, LFO vibrato)

Every sound renders all MAX_UNISON voices and masks the unused ones, so shapes are fixed and
``render`` jits and vmaps. Pitch, the LFO and the filter's cutoff move at a control rate (one
value per ``control_hop`` samples); oscillator phase is accumulated per control block and
advanced linearly inside it, which keeps float32 phase error below 1e-4 cycles for any note.
The amplitude envelope is evaluated per sample.

Output is bounded: |audio| <= 10 ** (gain_db / 20) * velocity <= 1, because the drive stage
is a tanh and every later factor is in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jaxsynth import params as P
from jaxsynth.envelopes import adsr
from jaxsynth.filters import svf, svf_g
from jaxsynth.modulation import control_times, interpolate_control, lfo
from jaxsynth.oscillators import frac, morph, morph_weights, white_noise


@dataclass(frozen=True)
class SynthConfig:
    """Static render settings (hashable: pass as a static argument to jit)."""

    sample_rate: int = 22050
    duration_s: float = 0.5
    control_hop: int = 32  # samples per control block (689 Hz control rate at 22.05 kHz)

    @property
    def num_samples(self) -> int:
        return int(round(self.sample_rate * self.duration_s))

    @property
    def num_blocks(self) -> int:
        return math.ceil(self.num_samples / self.control_hop)

    @property
    def default_note_length_s(self) -> float:
        """Note-off time when none is given: 70% of the clip, so the release is heard."""
        return 0.7 * self.duration_s


def _get(phys, name):
    """Column ``name`` of physical parameters (batch, N_PARAMS) -> (batch,)."""
    return phys[:, P.INDEX[name]]


def _unison(params01, phys):
    """Per-voice detune (semitones) and gain (1/sqrt(n) on the n active voices, 0 elsewhere),
    each a list of MAX_UNISON arrays of shape (batch,)."""
    n = (P.choice_index(params01, "unison.voices") + 1).astype(jnp.float32)
    detune_st, gain = [], []
    for v in range(P.MAX_UNISON):
        spread = jnp.where(n > 1, 2.0 * v / jnp.maximum(n - 1.0, 1.0) - 1.0, 0.0)
        detune_st.append(_get(phys, "unison.detune_cents") / 100.0 * spread)
        gain.append(jnp.where(v < n, 1.0 / jnp.sqrt(n), 0.0))
    return detune_st, gain


def _block_phases(phase0, dt, hop: int):
    """Oscillator phase (cycles, in [0, 1)) at the start of each control block, for per-block
    increments ``dt`` (blocks, ...). A ``lax.scan``, not ``jnp.cumsum``: XLA's CPU cumsum is a
    multi-level reduce-window whose last level was fused into (and recomputed by) the
    per-sample oscillator loop, which made the oscillators 9x slower."""
    def step(phase, inc):
        return frac(phase + inc), phase
    _, start = jax.lax.scan(step, phase0, frac(dt * hop))
    return start


def _oscillators(params01, phys, lfo_blocks, note, phase0, cfg: SynthConfig):
    """Both oscillators with all unison voices, summed, time-major: (num_blocks * hop, batch).

    The 2 x MAX_UNISON streams are a static Python sum, not a reduction over a voice axis:
    XLA fuses the sum into one loop, while a reduce over a middle axis ran 6x slower here."""
    detune_st, voice_gain = _unison(params01, phys)
    vibrato_st = _get(phys, "lfo.to_pitch_st") * lfo_blocks  # (blocks, batch)
    osc_st = [_get(phys, f"osc{o}.coarse_st") - 24.0 + _get(phys, f"osc{o}.fine_cents") / 100.0
              for o in (1, 2)]
    # semitones re A4 per (block, osc, voice, batch) -> cycles per sample
    semis = (note - 69.0 + jnp.stack(osc_st)[None, :, None] + jnp.stack(detune_st)[None, None]
             + vibrato_st[:, None, None])
    dt = jnp.clip(440.0 / cfg.sample_rate * jnp.exp2(semis / 12.0), 1e-7, 0.45)
    start = _block_phases(jnp.moveaxis(phase0, 0, -1), dt, cfg.control_hop)

    ramp = jnp.arange(cfg.control_hop, dtype=jnp.float32)[None, :, None]  # (1, hop, 1)
    out = 0.0
    for o in (1, 2):
        weights = morph_weights(_get(phys, f"osc{o}.shape"))  # (batch, 4)
        width = _get(phys, f"osc{o}.pulse_width")
        for v in range(P.MAX_UNISON):
            dt_ov = dt[:, o - 1, v, None, :]
            phase = frac(start[:, o - 1, v, None, :] + dt_ov * ramp)  # (blocks, hop, batch)
            amp = _get(phys, f"osc{o}.level") * voice_gain[v]
            out = out + amp * morph(phase, dt_ov, weights, width)
    return out.reshape(-1, params01.shape[0])


def _render_time_major(params01, keys, cfg: SynthConfig, note, velocity, note_length_s):
    """The traced voice for a batch, assuming sanitized inputs: (samples, batch)."""
    phys = P.denormalize(params01)
    T, hop, nb, sr = cfg.num_samples, cfg.control_hop, cfg.num_blocks, cfg.sample_rate
    # free-running unison: voice 0 starts at phase 0 (a single voice is key-independent)
    phase0 = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 0), (2, P.MAX_UNISON)))(keys)
    phase0 = phase0 * (jnp.arange(P.MAX_UNISON) > 0)
    noise_seed = jax.vmap(lambda k: jax.random.bits(jax.random.fold_in(k, 1), (), jnp.uint32))(keys)

    t_ctrl = control_times(nb, hop, sr)[:, None]  # (points, 1)
    lfo_shape = jax.nn.one_hot(P.choice_index(params01, "lfo.shape"), 4)
    lfo_ctrl = lfo(t_ctrl, _get(phys, "lfo.rate_hz"), lfo_shape)  # (points, batch)

    x = _oscillators(params01, phys, lfo_ctrl[:-1], note, phase0, cfg)[:T]
    x = x + _get(phys, "noise.level") * white_noise(noise_seed, T)

    fenv = adsr(t_ctrl, _get(phys, "filter_env.attack_s"), _get(phys, "filter_env.decay_s"),
                _get(phys, "filter_env.sustain"), _get(phys, "filter_env.release_s"), note_length_s)
    octaves = (_get(phys, "filter.env_amount_oct") * fenv + _get(phys, "lfo.to_cutoff_oct") * lfo_ctrl
               + _get(phys, "filter.key_track") * (note - 60.0) / 12.0)
    g = interpolate_control(svf_g(_get(phys, "filter.cutoff_hz") * jnp.exp2(octaves), sr), hop)[:T]
    mix = jax.nn.one_hot(P.choice_index(params01, "filter.type"), 3)
    y = svf(x, g, 1.0 / _get(phys, "filter.resonance_q"), mix)
    y = jnp.tanh(jnp.power(10.0, _get(phys, "output.drive_db") / 20.0) * y)

    t = jnp.arange(T, dtype=jnp.float32)[:, None] / sr
    amp = adsr(t, _get(phys, "amp_env.attack_s"), _get(phys, "amp_env.decay_s"),
               _get(phys, "amp_env.sustain"), _get(phys, "amp_env.release_s"), note_length_s)
    tremolo = 1.0 - _get(phys, "lfo.to_amp") * 0.5 * (1.0 - lfo_ctrl)
    amp = amp * interpolate_control(tremolo, hop)[:T]
    gain = jnp.power(10.0, _get(phys, "output.gain_db") / 20.0) * velocity
    return gain * amp * y


def _is_concrete(*xs) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


def _check_render_args(params01, note, velocity, note_length_s, batch: int | None):
    x = P.validate_params01(params01)
    if batch is None and x.ndim != 1:
        raise P.PresetError(f"render takes one preset of shape ({P.N_PARAMS},), got {x.shape}; "
                            "use render_batch for a batch")
    if batch is not None and x.ndim != 2:
        raise P.PresetError(f"render_batch takes presets of shape (batch, {P.N_PARAMS}), got {x.shape}")
    for name, v, lo, hi in (("note", note, 0.0, 127.0), ("velocity", velocity, 0.0, 1.0),
                            ("note_length_s", note_length_s, 0.0, np.inf)):
        a = np.asarray(v, np.float64)
        if not (np.all(np.isfinite(a)) and np.all(a >= lo) and np.all(a <= hi)):
            raise ValueError(f"{name} must be finite and within [{lo}, {hi}], got {v!r}")


def _key_of(key):
    if isinstance(key, int):
        raise TypeError("render needs a JAX PRNG key (jax.random.key(seed)), not an int")
    return key


@partial(jax.jit, static_argnames="cfg")
def _render_batch_jit(params01, keys, cfg, note, velocity, note_length_s):
    audio = _render_time_major(P.sanitize(params01), keys, cfg, jnp.clip(note, 0.0, 127.0),
                               jnp.clip(velocity, 0.0, 1.0), jnp.maximum(note_length_s, 0.0))
    return audio.T


def render(params01: Float[Array, "n_params"], key: Array, config: SynthConfig = SynthConfig(),
           note: float = 60.0, velocity: float = 1.0,
           note_length_s: float | None = None) -> Float[Array, "samples"]:
    """Render one note of the preset ``params01`` (normalized, shape (N_PARAMS,)).

    ``key`` seeds the noise and the unison voices' start phases: the same params and key give
    the same audio, bit for bit, on one backend. ``note`` is a MIDI note number (fractional
    allowed), ``velocity`` in [0, 1] scales the level, ``note_length_s`` is the note-off time
    (default: ``config.default_note_length_s``).

    Called with concrete arrays it validates its input and raises a clear error for NaN,
    out-of-range values or a wrong shape; under jit/vmap/grad it clips instead (NaN -> default).
    """
    if note_length_s is None:
        note_length_s = config.default_note_length_s
    if _is_concrete(params01, note, velocity, note_length_s):
        _check_render_args(params01, note, velocity, note_length_s, batch=None)
    one = lambda v: jnp.asarray(v, jnp.float32).reshape(1)
    return _render_batch_jit(jnp.asarray(params01, jnp.float32)[None], _key_of(key)[None], config,
                             one(note), one(velocity), one(note_length_s))[0]


def render_batch(params01: Float[Array, "batch n_params"], keys: Array,
                 config: SynthConfig = SynthConfig(), note=60.0, velocity=1.0,
                 note_length_s=None) -> Float[Array, "batch samples"]:
    """``render`` over a batch: ``keys`` has one key per sound (``jax.random.split(key, B)``);
    ``note``, ``velocity`` and ``note_length_s`` are scalars or one value per sound.
    A sound rendered in a batch equals the same sound rendered alone."""
    if note_length_s is None:
        note_length_s = config.default_note_length_s
    b = params01.shape[0]
    if _is_concrete(params01, note, velocity, note_length_s):
        _check_render_args(params01, note, velocity, note_length_s, batch=b)
    if jnp.shape(_key_of(keys))[:1] != (b,):
        raise ValueError(f"render_batch needs one key per sound: keys of shape ({b},) from "
                         f"jax.random.split(key, {b}), got shape {jnp.shape(keys)}")
    as_batch = lambda v: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (b,))
    return _render_batch_jit(jnp.asarray(params01, jnp.float32), _key_of(keys), config,
                             as_batch(note), as_batch(velocity), as_batch(note_length_s))
