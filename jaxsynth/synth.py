"""The voice: normalized parameters -> audio.

Signal graph (one mono note)::

    osc1 --+                  filter ADSR, key tracking, LFO
    osc2 --+-- mix --> SVF (LP/BP/HP) --> drive (tanh) --> x amp ADSR x LFO tremolo x gain
    noise -+
    (each oscillator: MAX_UNISON detuned voices, morph sine/triangle/saw/pulse, LFO vibrato)

Every sound renders all MAX_UNISON voices and masks the unused ones, so shapes are fixed and
``render`` jits and vmaps (on a CPU a large batch renders in chunks ordered by voice count, and
a chunk skips the voices none of its sounds use). Pitch, the LFO and the filter's cutoff move at a control rate (one
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
from jaxsynth.filters import svf_g, svf_tick
from jaxsynth.modulation import control_times, lfo
from jaxsynth.oscillators import frac, hash_noise, morph_weights, sin_pi


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


def _voice_constants(params01, phys, note):
    """Per-voice constants of the 2 x MAX_UNISON oscillator voices, each of shape
    (2 * MAX_UNISON, ..., batch), voice index o * MAX_UNISON + v:

    * ``semis``: pitch in semitones re A4 before vibrato;
    * ``coef``: (voices, 4, batch) weights of (sine, triangle, saw(a), saw(a + width)) times
      the voice's level (osc level x unison gain), so that the morph is one weighted sum
      (pulse = saw(a) - saw(a + width) is folded into the saw weights);
    * ``width``: pulse width (clipped to [0, 1], a no-op on its range, so that it too is
      computed inside the map: passed through unchanged, XLA forwarded the recomputation).

    Computed by ``lax.map`` over the voices so that XLA materializes them in (voices, batch)
    buffers: left as plain expressions, XLA fused them (sanitize, denormalize, morph weights,
    unison gains, with strided reads of the (batch, N_PARAMS) matrix) into the per-sample
    oscillator loop and recomputed them for every sample (benchmarks/RESULTS.md, "what limits
    rendering")."""
    detune_st, voice_gain = _unison(params01, phys)
    semis, level, width, shape = [], [], [], []
    for o in (1, 2):
        osc_st = _get(phys, f"osc{o}.coarse_st") - 24.0 + _get(phys, f"osc{o}.fine_cents") / 100.0
        for v in range(P.MAX_UNISON):
            semis.append(note - 69.0 + osc_st + detune_st[v])
            level.append(_get(phys, f"osc{o}.level") * voice_gain[v])
            width.append(_get(phys, f"osc{o}.pulse_width"))
            shape.append(_get(phys, f"osc{o}.shape"))

    def one_voice(args):
        semis_v, level_v, width_v, shape_v = args
        w = morph_weights(shape_v)  # (batch, 4)
        coef = level_v * jnp.stack([w[:, 0], w[:, 1], w[:, 2] + w[:, 3], -w[:, 3]])
        return semis_v, coef, jnp.clip(width_v, 0.0, 1.0)

    return jax.lax.map(one_voice, tuple(jnp.stack(a) for a in (semis, level, width, shape)))


def _control_points(semis, vibrato_st, cutoff_hz, phase0, cfg: SynthConfig):
    """Everything that moves at the control rate, in one ``lax.scan`` over the num_blocks + 1
    control points: per voice the phase at the block start plus one half (cycles, in
    [1/2, 3/2): the oscillators' wrap point), the increment dt (cycles/sample) and 1 / (2 dt)
    for the PolyBLEP, and the filter's g = tan(pi fc / fs).

    A scan rather than array expressions for two measured reasons (benchmarks/RESULTS.md, "what
    limits rendering"):
    XLA's CPU ``cumsum`` for the phase was fused into (and recomputed by) the per-sample
    oscillator loop (9x slower), and the ``tan`` of the cutoff was likewise fused into the
    per-sample interpolation of g and evaluated twice per sample (12x slower than once per
    control point). Scan outputs are materialized, so each is computed once per point."""
    hop, sr = cfg.control_hop, cfg.sample_rate

    def step(phase, xs):
        vib, hz = xs
        dt = jnp.clip(440.0 / sr * jnp.exp2((semis + vib) / 12.0), 1e-7, 0.45)
        return frac(phase + frac(dt * hop)), (phase + 0.5, dt, 0.5 / dt, svf_g(hz, sr))

    _, (start_a, dt, half_inv_dt, g) = jax.lax.scan(step, phase0, (vibrato_st, cutoff_hz))
    return start_a, dt, half_inv_dt, g


def _sign(u):
    return jnp.where(u < 0.0, -1.0, 1.0)


def _saw_centered(u, sign, half_inv_dt):
    """PolyBLEP saw at u = 2 t - 1 (t in [0, 1) the saw's own phase): u minus the residual
    sign(u) * max(1 - (1 - |u|) / (2 dt), 0)^2, i.e. ``oscillators.saw_blep`` rewritten in u."""
    m = jnp.square(jnp.maximum(1.0 - (1.0 - jnp.abs(u)) * half_inv_dt, 0.0))
    return u - sign * m


def _voice_wave(a, half_inv_dt, coef, width):
    """One voice's morphing waveform at ``a`` = phase + 1/2 (cycles, any real): equal, to
    float rounding, to ``oscillators.morph(phase, dt, weights, width)`` with ``coef`` and
    ``width`` from ``_voice_constants`` (tests/jaxsynth/test_render_fastpath.py).

    The shapes share one wrap, u = 2 frac(a) - 1 = 2 frac(phase + 1/2) - 1, from which
    y = 1 - 2 phase = sign(u) - u (sine argument), triangle = sign(u) (1 - |2|u| - 1|), the BLEP
    saw, and the pulse's second saw at a + width (wrapped once) follow with no further
    ``floor``: ~50 operations per voice and sample."""
    a = frac(a)
    u = 2.0 * a - 1.0
    s = _sign(u)
    sine = sin_pi(s - u)
    tri = s * (1.0 - jnp.abs(2.0 * jnp.abs(u) - 1.0))
    b = a + width
    ub = 2.0 * jnp.where(b >= 1.0, b - 1.0, b) - 1.0
    return (coef[0] * sine + coef[1] * tri + coef[2] * _saw_centered(u, s, half_inv_dt)
            + coef[3] * _saw_centered(ub, _sign(ub), half_inv_dt))


def _oscillators(start_a, dt, half_inv_dt, coef, width, hop: int, num_samples: int,
                 unison: int = P.MAX_UNISON):
    """Both oscillators with their first ``unison`` voices, summed, batch-major:
    (batch, num_samples). Inputs are per block (blocks, voices, batch) and per voice
    (voices, ..., batch), voice index o * MAX_UNISON + v. A voice past a sound's voice count has
    zero weight and adds exactly 0, so leaving it out changes nothing when no sound uses it.

    Batch-major, so that the filter loop can write its output in place and no (samples, batch)
    -> (batch, samples) transpose follows (benchmarks/RESULTS.md, "Render speed"); the inner
    axis is the block's ``hop`` samples. The voices are a static Python sum, not a reduction over
    a voice axis: XLA fuses the sum into one loop, while a reduce over a middle axis ran 6x
    slower here."""
    per_voice = lambda a: jnp.transpose(a, (1, 2, 0))[..., None]  # (voices, batch, blocks, 1)
    start_a, dt, half_inv_dt = per_voice(start_a), per_voice(dt), per_voice(half_inv_dt)
    ramp = jnp.arange(hop, dtype=jnp.float32)
    out = 0.0
    for v in (o * P.MAX_UNISON + u for o in range(2) for u in range(unison)):
        a = start_a[v] + dt[v] * ramp  # (batch, blocks, hop)
        out = out + _voice_wave(a, half_inv_dt[v], coef[v][:, :, None, None], width[v][:, None, None])
    return out.reshape(out.shape[0], -1)[:, :num_samples]


def _render_sanitized(params01, keys, cfg: SynthConfig, note, velocity, note_length_s,
                      max_unison=None):
    """The traced voice for a batch, assuming sanitized inputs: (batch, samples).
    ``max_unison``: None, or a traced int >= every sound's unison voice count, so that only that
    many voices per oscillator are computed (``lax.switch`` over the MAX_UNISON sums)."""
    phys = P.denormalize(params01)
    T, hop, nb, sr = cfg.num_samples, cfg.control_hop, cfg.num_blocks, cfg.sample_rate
    # free-running unison: voice 0 starts at phase 0 (a single voice is key-independent)
    phase0 = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 0), (2, P.MAX_UNISON)))(keys)
    phase0 = phase0 * (jnp.arange(P.MAX_UNISON) > 0)
    noise_seed = jax.vmap(lambda k: jax.random.bits(jax.random.fold_in(k, 1), (), jnp.uint32))(keys)

    t_ctrl = control_times(nb, hop, sr)[:, None]  # (points, 1)
    lfo_shape = jax.nn.one_hot(P.choice_index(params01, "lfo.shape"), 4)
    lfo_ctrl = lfo(t_ctrl, _get(phys, "lfo.rate_hz"), lfo_shape)  # (points, batch)
    fenv = adsr(t_ctrl, _get(phys, "filter_env.attack_s"), _get(phys, "filter_env.decay_s"),
                _get(phys, "filter_env.sustain"), _get(phys, "filter_env.release_s"), note_length_s)
    octaves = (_get(phys, "filter.env_amount_oct") * fenv + _get(phys, "lfo.to_cutoff_oct") * lfo_ctrl
               + _get(phys, "filter.key_track") * (note - 60.0) / 12.0)
    cutoff_hz = _get(phys, "filter.cutoff_hz") * jnp.exp2(octaves)

    semis, coef, width = _voice_constants(params01, phys, note)
    start_a, dt, half_inv_dt, g_ctrl = _control_points(
        semis, _get(phys, "lfo.to_pitch_st") * lfo_ctrl, cutoff_hz,
        jnp.moveaxis(phase0, 0, -1).reshape(-1, params01.shape[0]), cfg)

    osc_args = (start_a[:-1], dt[:-1], half_inv_dt[:-1], coef, width)
    if max_unison is None:
        x = _oscillators(*osc_args, hop, T)
    else:
        x = jax.lax.switch(max_unison - 1, [partial(_oscillators, hop=hop, num_samples=T, unison=u)
                                            for u in range(1, P.MAX_UNISON + 1)], *osc_args)
    tremolo = 1.0 - _get(phys, "lfo.to_amp") * 0.5 * (1.0 - lfo_ctrl)
    return _filter_drive_amp(x, noise_seed, g_ctrl, tremolo, params01, phys, cfg, velocity,
                             note_length_s)


FILTER_LOOP_UNROLL = 4  # samples per iteration of the per-sample filter / drive / amp loop


def _filter_drive_amp(x, noise_seed, g_ctrl, tremolo, params01, phys, cfg: SynthConfig,
                      velocity, note_length_s):
    """Everything after the oscillators, in one loop over samples: the noise
    (``hash_noise``), the SVF with g interpolated from its control points, the tanh drive, the
    amp ADSR, the tremolo and the output gain.

    The noise is drawn inside the loop, one row per step: the loop's kernels are small and
    bound by their launch cost, so the hash is nearly free there, while in the oscillators'
    fusion XLA recomputed the noise level's denormalization for every sample.

    One loop instead of a filter scan followed by array expressions, because XLA fused those
    expressions (tanh, ADSR, interpolation) into the (samples, batch) -> (batch, samples)
    transpose the time-major render needed, where the CPU ran them unvectorized
    (benchmarks/RESULTS.md, "what limits rendering"). Step n reads column n of the batch-major
    input and overwrites it with the output, so the input buffer becomes the returned audio: no
    transpose and no second (batch, samples) buffer. Per-sound constants are closed over, so
    XLA computes them once, outside the loop."""
    hop, sr = cfg.control_hop, cfg.sample_rate
    mix = jax.nn.one_hot(P.choice_index(params01, "filter.type"), 3)
    k = 1.0 / _get(phys, "filter.resonance_q")
    w_lp, w_bp, w_hp = mix[:, 0], mix[:, 1] * k, mix[:, 2]
    drive = jnp.power(10.0, _get(phys, "output.drive_db") / 20.0)
    gain = jnp.power(10.0, _get(phys, "output.gain_db") / 20.0) * velocity
    env = [_get(phys, f"amp_env.{n}") for n in ("attack_s", "decay_s", "sustain", "release_s")]
    noise_level = _get(phys, "noise.level")

    def step(n, carry):
        state, buf = carry
        block, ramp = n // hop, (n % hop).astype(jnp.float32) / hop
        lerp = lambda points: points[block] + (points[block + 1] - points[block]) * ramp
        x_n = jax.lax.dynamic_index_in_dim(buf, n, axis=1, keepdims=False)
        state, (lp, bp, hp) = svf_tick(state, x_n + noise_level * hash_noise(n, noise_seed),
                                       lerp(g_ctrl), k)
        amp = adsr(n.astype(jnp.float32) / sr, *env, note_length_s) * lerp(tremolo)
        y = gain * amp * jnp.tanh(drive * (w_lp * lp + w_bp * bp + w_hp * hp))
        return state, jax.lax.dynamic_update_index_in_dim(buf, y, n, 1)

    # the output overwrites the input in place (sample n is read before it is written): a scan's
    # stacked output would first fill a fresh (samples, batch) buffer with zeros. Four samples
    # per iteration: the loop's counter, index and state-copy kernels then run once per four
    # samples instead of once per sample (10 -> ~6 kernels per sample; the same audio bit for
    # bit; 5-13 % less CPU time for the render at batch 1,024 in A/B runs; 8 was no faster, 16
    # slower)
    zero = jnp.zeros(x.shape[:1], x.dtype)
    _, y = jax.lax.fori_loop(0, x.shape[1], step, ((zero, zero), x), unroll=FILTER_LOOP_UNROLL)
    return y


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
    """The render key, or a TypeError naming what was passed and how to make a key."""
    if key is None or isinstance(key, (int, float, np.integer, np.floating)):
        raise TypeError(f"render needs a JAX PRNG key (jax.random.key(seed)), not "
                        f"{type(key).__name__}; for a batch pass jax.random.split(key, batch)")
    return key


def _sanitize_note_args(note, velocity, note_length_s, cfg: SynthConfig):
    """Inside-jit guard for the note arguments, as ``params.sanitize`` is for the preset:
    NaN -> the default (note 60, velocity 1, ``cfg.default_note_length_s``), the rest clipped
    to note [0, 127], velocity [0, 1], note length >= 0 (+Inf: the note is held to the end)."""
    fix = lambda v, default: jnp.where(jnp.isnan(v), default, v)
    return (jnp.clip(fix(note, 60.0), 0.0, 127.0), jnp.clip(fix(velocity, 1.0), 0.0, 1.0),
            jnp.maximum(fix(note_length_s, cfg.default_note_length_s), 0.0))


# Sounds per chunk when rendering on a CPU: a chunk's (chunk, samples) buffer (11 MB at 22.05
# kHz, 0.5 s) stays in the caches and is reused chunk after chunk. One pass over a fresh
# (1024, 11025) buffer pays a page fault per 4 KiB and misses the caches: the oscillators alone
# took 98-137 CPU-ms there against 4 x 14 in chunks of 256, and 512 was no faster at batch 4096
# (benchmarks/RESULTS.md, "Render speed").
CPU_BATCH_CHUNK = 256


def _in_chunks(render_chunk, chunk: int, consume, params01, per_sound, extra):
    """``consume(render_chunk(params01, *per_sound, max_unison=...), *extra)`` over chunks of
    at most ``chunk`` sounds, one after another (``lax.fori_loop``), each chunk's rows of the
    result (a pytree of arrays with one leading row per sound) written in place into the
    whole batch's. ``per_sound`` and ``extra`` hold arrays with one leading row per sound; the
    consumer sees a chunk's rows of ``extra`` next to its audio.

    Sounds are ordered by their unison voice count (a stable argsort) before chunking, so that
    most chunks hold sounds with one count and ``max_unison`` (the chunk's largest count) lets
    the render skip the voices no sound in the chunk uses: same audio bit for bit, ~12 % less
    CPU time at random presets (benchmarks/RESULTS.md, "Render speed"). The batch is split into
    equal chunks, padded with copies of some of its sounds whose results are dropped (scatter
    mode "drop")."""
    b = params01.shape[0]
    n = -(-b // chunk)
    size = -(-b // n)
    pad = n * size - b
    voices = P.choice_index(params01, "unison.voices") + 1
    order = jnp.argsort(voices, stable=True)
    take = jnp.concatenate([order, order[:pad]]).reshape(n, size)
    put = jnp.concatenate([order, jnp.full((pad,), b, order.dtype)]).reshape(n, size)
    rows = lambda tree, j: jax.tree.map(lambda a: jnp.take(a, take[j], axis=0), tree)

    def result(j):
        audio = render_chunk(*rows((params01,) + tuple(per_sound), j),
                             max_unison=jnp.max(voices[take[j]]))
        return consume(audio, *rows(tuple(extra), j))

    def one_chunk(j, out):
        return jax.tree.map(lambda o, r: o.at[put[j]].set(r, mode="drop", unique_indices=True),
                            out, result(j))

    shapes = jax.eval_shape(result, 0)
    init = jax.tree.map(lambda r: jnp.zeros((b,) + r.shape[1:], r.dtype), shapes)
    return jax.lax.fori_loop(0, n, one_chunk, init)


def render_batch_map(consume, params01, keys, cfg: SynthConfig, note, velocity, note_length_s,
                     extra=()):
    """``consume(audio, *extra)`` of the batch's audio, without the whole batch's audio: on a
    CPU a batch larger than ``CPU_BATCH_CHUNK`` is rendered chunk by chunk as in
    ``render_batch_jit`` and each chunk's audio (at most ``CPU_BATCH_CHUNK`` sounds, in an
    order of the render's choosing) goes to ``consume`` with the same rows of ``extra`` (a
    tuple of arrays or pytrees with one leading row per sound) while it is still in the caches.
    ``consume`` must treat rows independently and return a pytree of arrays with one leading
    row per sound; the results come back in the batch's order. Elsewhere (GPU, TPU) the whole
    batch is rendered in one pass and consumed at once.

    For callers inside their own jit that reduce the audio right away (the environment's
    analysis and loss): the batch's audio, 45 MB per 1,024 sounds at 22.05 kHz and 0.5 s,
    is never written out. Arguments as ``render_batch_jit`` (traced, no host-side checks)."""
    whole = lambda p, k, n, v, nl, max_unison=None: _render_sanitized(
        p, k, cfg, *_sanitize_note_args(n, v, nl, cfg), max_unison=max_unison)
    args = (P.sanitize(params01), keys, note, velocity, note_length_s)
    one_pass = lambda *a: consume(whole(*a[:5]), *a[5:])
    if params01.shape[0] <= CPU_BATCH_CHUNK:
        return one_pass(*args, *extra)
    chunked = lambda *a: _in_chunks(whole, CPU_BATCH_CHUNK, consume, a[0], a[1:5], a[5:])
    return jax.lax.platform_dependent(*args, *extra, cpu=chunked, default=one_pass)


@partial(jax.jit, static_argnames="cfg")
def render_batch_jit(params01, keys, cfg, note, velocity, note_length_s):
    """What ``render_batch`` runs after checking its inputs on the host: jitted, traceable, no
    host-side validation (NaN notes take the defaults, parameters are sanitized in the graph).
    For callers inside their own jit (benchmarks); others use ``render_batch``.

    On a CPU a batch larger than ``CPU_BATCH_CHUNK`` renders in chunks of at most that many
    sounds, ordered by unison voice count (``_in_chunks``; ``lax.platform_dependent``: the
    choice is made when the program is lowered, not at run time); elsewhere the whole batch is
    one pass, which is what a GPU or TPU needs to fill its cores. A sound renders the same in
    either (to float rounding; the chunks are independent)."""
    return render_batch_map(lambda audio: audio, params01, keys, cfg, note, velocity, note_length_s)


def local_cpu_devices() -> list:
    """The CPU devices of this process when the CPU is JAX's default backend, else [].
    There is one unless the process asked for more before JAX started (``JAX_NUM_CPU_DEVICES=2``
    in the environment, ``jax.config.update("jax_num_cpu_devices", 2)`` first thing, or XLA's
    ``--xla_force_host_platform_device_count``)."""
    return jax.local_devices(backend="cpu") if jax.default_backend() == "cpu" else []


@partial(jax.jit, static_argnames="cfg")
def render_batch_spread(params01, keys, cfg, note, velocity, note_length_s):
    """``render_batch_jit`` with the batch split over the local CPU devices, one part per device
    (``shard_map``; the batch padded with copies of its first sound to a multiple of the device
    count); the audio comes back split over the devices (``render_batch`` moves it to the
    first). The same audio to float rounding (bit for bit at batch 1,024 here): every sound
    renders independently of the others; a smaller part may vectorize differently.

    Why: XLA:CPU runs one program's per-sample filter loop on one thread and does not overlap
    independent operations, so a single-device render leaves the second core of a 2-core CPU
    idle for about half its time (benchmarks/RESULTS.md, "Render on two cores"); one device
    per core runs two loops at once. Needs more than one CPU device (``local_cpu_devices``)."""
    devices = local_cpu_devices()
    if not devices:
        raise ValueError(f"render_batch_spread splits a batch over CPU devices, but JAX's default "
                         f"backend is {jax.default_backend()}; use render_batch_jit there")
    n, b = len(devices), params01.shape[0]
    pad = -b % n
    grow = lambda a: jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)]) if pad else a
    mesh = jax.sharding.Mesh(np.array(devices), ("cpu",))
    spec = jax.sharding.PartitionSpec("cpu")
    part = jax.shard_map(lambda p, k, *note_args: render_batch_jit(p, k, cfg, *note_args),
                         mesh=mesh, in_specs=(spec,) * 5, out_specs=spec, check_vma=False)
    return part(*(grow(a) for a in (params01, keys, note, velocity, note_length_s)))[:b]


def render(params01: Float[Array, "n_params"], key: Array, config: SynthConfig = SynthConfig(),
           note: float = 60.0, velocity: float = 1.0,
           note_length_s: float | None = None) -> Float[Array, "samples"]:
    """Render one note of the preset ``params01`` (normalized, shape (N_PARAMS,)).

    ``key`` seeds the noise and the unison voices' start phases: the same params and key give
    the same audio, bit for bit, on one backend. ``note`` is a MIDI note number (fractional
    allowed), ``velocity`` in [0, 1] scales the level, ``note_length_s`` is the note-off time
    (default: ``config.default_note_length_s``).

    Called with concrete arrays it validates its input and raises a clear error for NaN,
    out-of-range values or a wrong shape; under jit/vmap/grad it clips instead (NaN -> default),
    for the preset as for ``note`` (60), ``velocity`` (1) and ``note_length_s`` (the default).
    """
    if note_length_s is None:
        note_length_s = config.default_note_length_s
    if _is_concrete(params01, note, velocity, note_length_s):
        _check_render_args(params01, note, velocity, note_length_s, batch=None)
    one = lambda v: jnp.asarray(v, jnp.float32).reshape(1)
    return render_batch_jit(jnp.asarray(params01, jnp.float32)[None], _key_of(key)[None], config,
                             one(note), one(velocity), one(note_length_s))[0]


def render_batch(params01: Float[Array, "batch n_params"], keys: Array,
                 config: SynthConfig = SynthConfig(), note=60.0, velocity=1.0,
                 note_length_s=None, spread: bool = False) -> Float[Array, "batch samples"]:
    """``render`` over a batch: ``keys`` has one key per sound (``jax.random.split(key, B)``);
    ``note``, ``velocity`` and ``note_length_s`` are scalars or one value per sound.
    A sound rendered in a batch equals the same sound rendered alone.

    ``spread=True``: in a process with several CPU devices (``local_cpu_devices``) the batch is
    split over them (``render_batch_spread``; ~1.4-2x faster on a 2-core CPU). Off by default so
    that what a program computes does not depend on how many CPU devices its process has (a
    smaller part may round differently in the last bit)."""
    if note_length_s is None:
        note_length_s = config.default_note_length_s
    if not isinstance(params01, jax.Array):
        params01 = np.asarray(params01, np.float32)
    if params01.ndim != 2 or params01.shape[0] == 0:
        raise P.PresetError(f"render_batch takes presets of shape (batch, {P.N_PARAMS}) with "
                            f"batch >= 1, got {params01.shape}; for one preset use render")
    b = params01.shape[0]
    if _is_concrete(params01, note, velocity, note_length_s):
        _check_render_args(params01, note, velocity, note_length_s, batch=b)
    if jnp.shape(_key_of(keys))[:1] != (b,):
        raise ValueError(f"render_batch needs one key per sound: keys of shape ({b},) from "
                         f"jax.random.split(key, {b}), got shape {jnp.shape(keys)}")
    as_batch = lambda v: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (b,))
    args = (jnp.asarray(params01, jnp.float32), _key_of(keys), config,
            as_batch(note), as_batch(velocity), as_batch(note_length_s))
    devices = local_cpu_devices() if spread and b > 1 else []
    if len(devices) > 1:  # one part per CPU device, back on the first
        return jax.device_put(render_batch_spread(*args), devices[0])
    return render_batch_jit(*args)
