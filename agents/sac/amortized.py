"""The amortized first guess: a network that maps a target's features to a whole preset in one
pass, trained on fresh synthetic (preset, sound) pairs.

Inputs (the analysis the evaluation harness uses: 0.5 s, 64 mel bands, note 60):
  * the target's log-mel (``Features.log_mel``, loudness-normalised, dB), flattened;
  * three scalars (``target_scalars``): the note-level f0 from YIN (``jaxsynth.pitch.
    note_from_yin``) in semitones relative to the played note, whether the note is pitched,
    and the raw loudness (LUFS; the log-mel is loudness-normalised, so the output gain is
    otherwise invisible).

Outputs: continuous parameters through a sigmoid (normalized [0, 1]); the five discrete
parameters (the two coarse tunes, unison voice count, filter type, LFO shape) through
**categorical heads** (softmax over their choices), guessed by argmax. Categorical, not a
snapped regression: a regression of a multimodal target averages the modes (an octave-
ambiguous coarse tune of -12 or +12 regresses to 0; lowpass vs highpass to bandpass), and
snapping the average picks a choice that is neither; cross-entropy keeps the modes apart.

Losses (``make_losses``):
  * **parameter loss**: L1 on continuous parameters + cross-entropy on the discrete ones, each
    weighted by whether the parameter is audible at the TRUE preset (``audibility_weights``):
    an oscillator at level 0, a pulse width when the shape has no pulse component, unison
    detune with one voice, the filter envelope with zero amount, the LFO with zero depth, and
    the filter key tracking at the fixed note 60 are not penalised. The two oscillators are
    interchangeable (swapping their parameter groups gives the same sound), so the loss is the
    minimum over the true preset and its oscillator-swapped twin (``swap_oscillators``).
    Unison voices are symmetric by construction (spread evenly over +-detune), so their count
    and detune are the only unison parameters.
  * **spectral loss**: ``jaxsynth.losses.matching_loss`` of the guess rendered through the
    differentiable synth (gradients through every continuous parameter; the discrete ones are
    rendered at their argmax and get their gradient from the cross-entropy only), switched on
    after a fraction ``spectral_from`` of the steps (a schedule from the first loss to both).

Training is PureJaxRL style: ``make_train_amortized(config)`` returns a pure ``train(key)``, a
``lax.scan`` over steps; each step draws a FRESH batch of training presets
(``agents.curriculum.fresh_training_presets``: even partition bins, never a held-out preset)
from the configured stages, renders and analyses them in-graph with the one render key
(``agents.rendering``), predicts, and updates with optax Adam. ``train_run`` is the host loop
(compiled chunks, validation between them, the saved run directory).

A run directory holds ``amortized.msgpack`` (the network parameters, flax serialization) and
``amortized.json`` (format, config, SHA-256 of the msgpack, training summary), both written
atomically; ``load_amortized`` checks them and raises ``AmortizedLoadError`` naming the fix.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Callable, NamedTuple

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from agents import curriculum as C
from agents import rendering
from jaxsynth import params as P
from jaxsynth import pitch
from jaxsynth.features import FeatureConfig, Features
from jaxsynth.io import atomic_path, atomic_write
from jaxsynth.losses import LossWeights, matching_loss
from jaxsynth.oscillators import morph_weights
from jaxsynth.synth import SynthConfig

FORMAT = "jaxsynth-amortized"
VERSION = 1
PARAMS_FILE = "amortized.msgpack"
META_FILE = "amortized.json"
TRAIN_HINT = "train one with `python -m agents.amortized_train --out RUN_DIR`"
RUN_COPY = "amortized"  # the sub-directory of a SAC run (--amortized) holding the network it starts from

DISCRETE_IDX: tuple[int, ...] = tuple(int(i) for i in np.nonzero(P.IS_DISCRETE)[0])
N_CHOICES: tuple[int, ...] = tuple(len(P.SPECS[i].choices) for i in DISCRETE_IDX)
N_LOGITS = sum(N_CHOICES)
_OSC_FIELDS = ("shape", "pulse_width", "coarse_st", "fine_cents", "level")
_SWAP = np.arange(P.N_PARAMS)
for _f in _OSC_FIELDS:
    _SWAP[P.INDEX[f"osc1.{_f}"]], _SWAP[P.INDEX[f"osc2.{_f}"]] = P.INDEX[f"osc2.{_f}"], P.INDEX[f"osc1.{_f}"]
N_SCALARS = 3


class AmortizedLoadError(ValueError):
    """A run directory that holds no usable amortized network, with what to do about it."""


LR_SCHEDULES = ("constant", "cosine")
DISCRETE_HEADS = ("categorical", "snapped")


@dataclass(frozen=True)
class AmortizedConfig:
    """Static settings of the network and its training (hashable; saved with the run)."""

    seed: int = 0
    steps: int = 2000  # gradient steps; pairs trained on = steps * batch_size
    chunk_steps: int = 250  # steps per compiled chunk (validation + save between chunks)
    batch_size: int = 64
    stages: tuple[int, ...] = (0, 1, 2, 3)  # curriculum stages the fresh presets are drawn from
    hidden: tuple[int, ...] = (256, 256)
    encoder_width: int = 128  # first (log-mel encoder) layer
    encoder_init: str = "scratch"  # "scratch" or "pca": first layer = whitened PCA of log-mels
    pca_samples: int = 2048  # fresh renders the PCA is computed from (charged as pairs)
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"  # or "cosine": decays to 0 over ``steps`` (long runs)
    ce_weight: float = 0.25  # cross-entropy (nats) relative to the mean L1 (normalized units)
    # "categorical": softmax heads + cross-entropy for the discrete parameters; "snapped": the
    # ablation, discrete parameters regressed like the continuous ones (L1) and snapped to the
    # nearest choice (the question of categorical vs snapped, benchmarks/RESULTS.md)
    discrete_head: str = "categorical"
    spectral_from: float = 1.0  # fraction of steps after which the spectral loss joins (1: never)
    spectral_weight: float = 0.05
    duration_s: float = 0.5  # the harness's clip length
    note: float = 60.0  # the harness's render note
    render_seed: int = 0  # the one render key (the harness's MatchConfig.render_seed)
    pitch_hop: int = 1024  # YIN hop: 4x cheaper than 256, note f0 within ~1 cent (median)
    val_size: int = 64
    val_seed: int = 1  # held-out presets of this seed validate (the harness uses seed 0)

    def __post_init__(self):
        if self.encoder_init not in ("scratch", "pca"):
            raise ValueError(f"encoder_init must be 'scratch' or 'pca', got {self.encoder_init!r}")
        if self.discrete_head not in DISCRETE_HEADS:
            raise ValueError(f"discrete_head must be one of {DISCRETE_HEADS}, got {self.discrete_head!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        bad = [s for s in self.stages if not 0 <= s < C.N_STAGES]
        if not self.stages or bad:
            raise ValueError(f"stages must be a non-empty subset of 0..{C.N_STAGES - 1}, got {self.stages}")
        for name in ("steps", "chunk_steps", "batch_size", "encoder_width", "pca_samples", "val_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.spectral_from <= 1.0:
            raise ValueError(f"spectral_from must be in [0, 1], got {self.spectral_from}")

    @property
    def synth(self) -> SynthConfig:
        return SynthConfig(duration_s=self.duration_s)

    @property
    def features(self) -> FeatureConfig:
        return FeatureConfig(sample_rate=self.synth.sample_rate, duration_s=self.duration_s)

    @property
    def pitch(self) -> pitch.PitchConfig:
        return pitch.PitchConfig(sample_rate=self.synth.sample_rate, hop_length=self.pitch_hop)

    @property
    def input_dim(self) -> int:
        fc = self.features
        frames = 1 + fc.num_samples // fc.hop_length
        return frames * fc.n_mels

    def net(self) -> "AmortizedNet":
        return AmortizedNet(self.encoder_width, tuple(self.hidden))


# ----------------------------------------------------------------------------- inputs


def log_mel_input(log_mel: Float[Array, "B frames n_mels"]) -> Float[Array, "B d"]:
    """Flattened log-mel, dB scaled to about [-1, 1] (floor -80 dB -> -1)."""
    return (log_mel.reshape(log_mel.shape[0], -1) + 40.0) / 40.0


def target_scalars(note_f0: pitch.NoteF0, loudness_lufs: Float[Array, "B"], note: float
                   ) -> Float[Array, "B 3"]:
    """(f0 re ``note`` in semitones / 24 (0 when unpitched), pitched (0/1), (LUFS + 20) / 20)."""
    semis = 12.0 * jnp.log2(jnp.maximum(note_f0.f0_hz, 1e-3) / pitch.midi_to_hz(note))
    semis = jnp.where(note_f0.pitched & jnp.isfinite(semis), jnp.clip(semis, -48.0, 48.0), 0.0)
    loud = jnp.clip((jnp.asarray(loudness_lufs) + 20.0) / 20.0, -5.0, 2.0)
    return jnp.stack([semis / 24.0, note_f0.pitched.astype(jnp.float32), loud], axis=-1)


def analyse_targets(audio: Float[Array, "B samples"], feats: Features, config: AmortizedConfig
                    ) -> tuple[Float[Array, "B frames n_mels"], Float[Array, "B 3"]]:
    """The network's inputs from a target's audio and features (pure; jit-able)."""
    f0 = pitch.note_from_yin(audio, config.pitch)
    return feats.log_mel, target_scalars(f0, feats.loudness_lufs, config.note)


# ----------------------------------------------------------------------------- network


class AmortizedNet(nn.Module):
    """log-mel (flattened) + scalars -> (continuous params01 (B, N_PARAMS), logits (B, N_LOGITS)).

    The first layer (``encoder``) is a linear map of the log-mel, optionally initialised as a
    whitened PCA (``pca_encoder``); an MLP with layer norm follows. Continuous outputs use a
    sigmoid; the entries of discrete parameters in the continuous output are unused."""

    encoder_width: int = 128
    hidden: tuple[int, ...] = (256, 256)

    @nn.compact
    def __call__(self, log_mel: Float[Array, "B frames n_mels"], scalars: Float[Array, "B 3"]):
        z = nn.Dense(self.encoder_width, name="encoder")(log_mel_input(log_mel))
        h = jnp.concatenate([nn.gelu(nn.LayerNorm()(z)), scalars], axis=-1)
        for width in self.hidden:
            h = nn.gelu(nn.LayerNorm()(nn.Dense(width)(h)))
        cont01 = nn.sigmoid(nn.Dense(P.N_PARAMS, name="continuous")(h))
        logits = nn.Dense(N_LOGITS, name="discrete")(h)
        return cont01, logits


def split_logits(logits: Float[Array, "B L"]) -> list[Float[Array, "B n"]]:
    """Per discrete parameter (order ``DISCRETE_IDX``), its log-probabilities."""
    out, start = [], 0
    for n in N_CHOICES:
        out.append(jax.nn.log_softmax(logits[..., start:start + n], axis=-1))
        start += n
    return out


def to_params01(cont01: Float[Array, "B n_params"], logits: Float[Array, "B L"],
                head: str = "categorical") -> Float[Array, "B n_params"]:
    """The guess: continuous outputs, discrete parameters at their most probable choice
    (``head="snapped"``: at the choice nearest the regressed value; the logits are unused)."""
    x = cont01
    if head == "categorical":
        for i, n, lp in zip(DISCRETE_IDX, N_CHOICES, split_logits(logits)):
            x = x.at[..., i].set(jnp.argmax(lp, axis=-1).astype(jnp.float32) / (n - 1))
    return P.snap(jnp.clip(x, 0.0, 1.0))


def guess_params01(net: AmortizedNet, net_params, target_log_mel: Float[Array, "B frames n_mels"],
                   target_scalars_: Float[Array, "B 3"], head: str = "categorical") -> Float[Array, "B n_params"]:
    """Pure, batched, jit-able: the preset guessed for each target (snapped, in [0, 1]).
    ``net`` is static (a hashable flax module; ``AmortizedConfig.net()``); ``target_scalars_``
    comes from ``target_scalars`` (f0 re the note, pitched, loudness); ``head`` is the
    network's ``AmortizedConfig.discrete_head``."""
    cont01, logits = net.apply(net_params, target_log_mel, target_scalars_)
    return to_params01(cont01, logits, head)


def start_fn(loaded: "LoadedAmortized", chunk: int = 256) -> Callable:
    """The network's guess as an episode start (``agents.env.fresh_targets``' ``start_fn``
    protocol: ``(key, target_params01 (n, N), target_log_mel, stage) -> params01 (n, N)``,
    jit-able). The network reads the target as the harness analyses it (its own clip length,
    analysis, note and render key), not the env's shorter observation, so each target is
    rendered once more at that setting: one render per episode and env, on top of the
    episode's edits. ``chunk`` targets are rendered at a time (``lax.map`` over chunks) to bound
    the transient memory of thousands of envs."""
    cfg, net_params, net = loaded.config, loaded.net_params, loaded.config.net()
    key = rendering.render_key(cfg.render_seed)

    def guess(target01):
        audio, feats = rendering.render_analyze(target01, key, cfg.synth, cfg.features, cfg.note, 1.0)
        return guess_params01(net, net_params, *analyse_targets(audio, feats, cfg), cfg.discrete_head)

    def start(key_, target01, target_log_mel, stage):
        del key_, target_log_mel, stage  # the guess depends on the target's sound only
        n = target01.shape[0]
        if n <= chunk or n % chunk:
            return guess(target01)
        return jax.lax.map(guess, target01.reshape(n // chunk, chunk, -1)).reshape(n, -1)

    return start


def check_amortized_env(loaded: "LoadedAmortized", env_config) -> None:
    """Refuse an environment whose targets the network cannot read: it was trained on renders
    at one note and velocity 1 (``agents.env.EnvConfig``'s ``note`` and ``velocity``)."""
    if env_config.note != loaded.config.note or env_config.velocity != 1.0:
        raise AmortizedLoadError(f"the amortized network was trained on renders at note {loaded.config.note}, "
                                 f"velocity 1; the environment renders note {env_config.note}, velocity "
                                 f"{env_config.velocity}: retrain it (python -m agents.amortized_train --note ...)")


def one_hot_logits(params01: Float[Array, "B n_params"]) -> Float[Array, "B L"]:
    """Logits that put all probability on ``params01``'s discrete choices (log-prob exactly 0;
    the others -1e9, whose exp underflows to 0): the network output of a perfect guess."""
    parts = []
    for i, n in zip(DISCRETE_IDX, N_CHOICES):
        idx = jnp.round(jnp.clip(params01[..., i], 0.0, 1.0) * (n - 1)).astype(jnp.int32)
        parts.append(jnp.where(jax.nn.one_hot(idx, n) > 0, 0.0, -1e9))
    return jnp.concatenate(parts, axis=-1)


# ----------------------------------------------------------------------------- losses


def swap_oscillators(params01: Float[Array, "... n_params"]) -> Float[Array, "... n_params"]:
    """The same sound with osc1's and osc2's parameter groups exchanged."""
    return params01[..., _SWAP]


def audibility_weights(true01: Float[Array, "B n_params"], note: float = 60.0) -> Float[Array, "B n_params"]:
    """Per parameter, how much it is heard at the TRUE preset, in [0, 1] (0: silent there).

    Oscillator parameters scale with the oscillator's normalized level (full weight from 0.2,
    i.e. -28 dB); pulse width also with the pulse share of the morph; unison detune needs more
    than one voice; the filter envelope's times and sustain scale with |amount| (full from
    0.8 octave); LFO shape and rate with the largest LFO depth (full from 0.2 normalized);
    filter key tracking is silent at note 60 (its effect is key_track * (note - 60) / 12)."""
    w = jnp.ones_like(true01)
    g = lambda name: true01[..., P.INDEX[name]]
    for o in (1, 2):
        level_w = jnp.clip(g(f"osc{o}.level") / 0.2, 0.0, 1.0)
        pulse = morph_weights(g(f"osc{o}.shape"))[..., 3]
        for f in ("shape", "pulse_width", "coarse_st", "fine_cents"):
            extra = pulse if f == "pulse_width" else 1.0
            w = w.at[..., P.INDEX[f"osc{o}.{f}"]].set(level_w * extra)
    voices = P.choice_index(true01, "unison.voices")
    w = w.at[..., P.INDEX["unison.detune_cents"]].set((voices > 0).astype(w.dtype))
    env_w = jnp.clip(jnp.abs(g("filter.env_amount_oct") - 0.5) / 0.1, 0.0, 1.0)
    for f in ("attack_s", "decay_s", "sustain", "release_s"):
        w = w.at[..., P.INDEX[f"filter_env.{f}"]].set(env_w)
    depth = jnp.max(jnp.stack([g("lfo.to_pitch_st"), g("lfo.to_cutoff_oct"), g("lfo.to_amp")]), axis=0)
    lfo_w = jnp.clip(depth / 0.2, 0.0, 1.0)
    for f in ("shape", "rate_hz"):
        w = w.at[..., P.INDEX[f"lfo.{f}"]].set(lfo_w)
    if note == 60.0:
        w = w.at[..., P.INDEX["filter.key_track"]].set(0.0)
    return w


def _oriented_param_loss(cont01, logits, true01, ce_weight: float, note: float, head: str):
    w = audibility_weights(true01, note)
    if head == "snapped":  # every parameter regressed: the mean weighted L1 over all of them
        return jnp.mean(w * jnp.abs(cont01 - true01), axis=-1)
    cont = ~P.IS_DISCRETE
    l1 = jnp.sum(jnp.where(cont, w * jnp.abs(cont01 - true01), 0.0), axis=-1) / cont.sum()
    ce = 0.0
    for i, n, lp in zip(DISCRETE_IDX, N_CHOICES, split_logits(logits)):
        idx = jnp.round(jnp.clip(true01[..., i], 0.0, 1.0) * (n - 1)).astype(jnp.int32)
        nll = -jnp.take_along_axis(lp, idx[..., None], axis=-1)[..., 0]
        ce = ce + w[..., i] * nll
    return l1 + ce_weight * ce / len(DISCRETE_IDX)


def param_loss(cont01: Float[Array, "B n_params"], logits: Float[Array, "B L"],
               true01: Float[Array, "B n_params"], ce_weight: float = 0.25, note: float = 60.0,
               head: str = "categorical") -> Float[Array, "B"]:
    """Per target: the audibility-weighted parameter loss, minimised over the two orderings of
    the oscillators (so it is the same for a true preset and its oscillator-swapped twin, and
    0 for a perfect guess: ``cont01 = true01``, ``logits = one_hot_logits(true01)``)."""
    a = _oriented_param_loss(cont01, logits, true01, ce_weight, note, head)
    b = _oriented_param_loss(cont01, logits, swap_oscillators(true01), ce_weight, note, head)
    return jnp.minimum(a, b)


def render_guess(cont01, logits, head: str = "categorical"):
    """What the spectral loss renders: continuous outputs (with gradients), discrete ones at
    their argmax or nearest choice (no gradient)."""
    hard = jax.lax.stop_gradient(to_params01(cont01, logits, head))
    return jnp.where(P.IS_DISCRETE, hard, jnp.clip(cont01, 0.0, 1.0))


def spectral_loss(cont01, logits, target: Features, config: AmortizedConfig,
                  weights: LossWeights = LossWeights()) -> Float[Array, "B"]:
    """``matching_loss(...).total`` of the rendered guess against the target's features."""
    _, feats = rendering.render_analyze(render_guess(cont01, logits, config.discrete_head), rendering.render_key(config.render_seed),
                                        config.synth, config.features, config.note, 1.0)
    return matching_loss(feats, target, weights).total


# ----------------------------------------------------------------------------- data


def fresh_presets(key: Array, config: AmortizedConfig, n: int) -> Float[Array, "n n_params"]:
    """``n`` fresh training presets, each from a stage drawn uniformly from ``config.stages``
    (``curriculum.fresh_training_presets``: even partition bins, never a held-out preset)."""
    k_stage, k_preset = jax.random.split(key)
    stages = jax.random.choice(k_stage, jnp.asarray(config.stages, jnp.int32), (n,))
    return jax.vmap(lambda k, s: C.fresh_training_presets(k, s, 1)[0])(jax.random.split(k_preset, n), stages)


def fresh_pairs(key: Array, config: AmortizedConfig, n: int):
    """``n`` fresh training presets (stage drawn uniformly from ``config.stages`` per preset;
    never a held-out preset), rendered with the one render key and analysed:
    (true01 (n, N), log_mel, scalars, Features)."""
    true01 = fresh_presets(key, config, n)
    audio, feats = rendering.render_analyze(true01, rendering.render_key(config.render_seed),
                                            config.synth, config.features, config.note, 1.0)
    log_mel, scalars = analyse_targets(audio, feats, config)
    return true01, log_mel, scalars, feats


def pca_encoder(key: Array, config: AmortizedConfig) -> tuple[Array, Array]:
    """Whitened PCA of ``pca_samples`` fresh log-mels: (kernel (d, width), bias (width,)) so
    that ``x @ kernel + bias`` are the top ``encoder_width`` components at unit variance."""
    n_batches = max(1, config.pca_samples // config.batch_size)
    keys = jax.random.split(key, n_batches)
    xs = jax.lax.map(lambda k: log_mel_input(fresh_pairs(k, config, config.batch_size)[1]), keys)
    x = xs.reshape(-1, xs.shape[-1])
    mean = x.mean(axis=0)
    cov = (x - mean).T @ (x - mean) / x.shape[0]
    evals, evecs = jnp.linalg.eigh(cov)  # ascending
    top = evecs[:, ::-1][:, :config.encoder_width]
    scale = 1.0 / jnp.sqrt(jnp.maximum(evals[::-1][:config.encoder_width], 1e-6))
    kernel = top * scale
    return kernel, -mean @ kernel


# ----------------------------------------------------------------------------- training


class TrainState(NamedTuple):
    net_params: dict
    opt_state: optax.OptState
    key: Array
    step: Array


class StepMetrics(NamedTuple):
    loss: Array
    param_loss: Array
    spectral_loss: Array  # NaN while the spectral loss is off


def make_losses(config: AmortizedConfig) -> Callable:
    """``loss_fn(net_params, true01, log_mel, scalars, target_feats, spectral_on) -> (loss,
    (param_loss, spectral_loss))``; the spectral branch runs only when ``spectral_on``."""
    net = config.net()

    def loss_fn(net_params, true01, log_mel, scalars, target_feats, spectral_on):
        cont01, logits = net.apply(net_params, log_mel, scalars)
        pl = param_loss(cont01, logits, true01, config.ce_weight, config.note, config.discrete_head).mean()

        def with_spectral(_):
            sl = spectral_loss(cont01, logits, target_feats, config).mean()
            return pl + config.spectral_weight * sl, sl

        def without(_):
            return pl, jnp.full((), jnp.nan)

        if config.spectral_from >= 1.0:  # never on: no render in the gradient graph at all
            loss, sl = without(None)
        else:
            loss, sl = jax.lax.cond(spectral_on, with_spectral, without, None)
        return loss, (pl, sl)

    return loss_fn


def make_amortized_steps(config: AmortizedConfig):
    """``(init(key) -> TrainState, run(state, n_steps) -> (state, StepMetrics (n_steps,)))``,
    both pure; ``run`` is a ``lax.scan`` of fresh-batch gradient steps (jit it with
    ``n_steps`` static)."""
    net = config.net()
    lr = config.learning_rate
    if config.lr_schedule == "cosine":
        lr = optax.cosine_decay_schedule(config.learning_rate, config.steps)
    opt = optax.adam(lr)
    loss_fn = make_losses(config)
    spectral_step = int(math.floor(config.spectral_from * config.steps))
    if config.spectral_from >= 1.0:
        spectral_step = config.steps + 1

    def init(key: Array) -> TrainState:
        k_net, k_pca, k_data = jax.random.split(key, 3)
        d = config.input_dim
        net_params = net.init(k_net, jnp.zeros((1, d // config.features.n_mels, config.features.n_mels)),
                              jnp.zeros((1, N_SCALARS)))
        if config.encoder_init == "pca":
            kernel, bias = pca_encoder(k_pca, config)
            net_params = jax.tree.map(lambda x: x, net_params)
            net_params["params"]["encoder"] = {"kernel": kernel, "bias": bias}
        return TrainState(net_params, opt.init(net_params), k_data, jnp.zeros((), jnp.int32))

    def one_step(state: TrainState, _):
        key, k_batch = jax.random.split(state.key)
        true01, log_mel, scalars, feats = fresh_pairs(k_batch, config, config.batch_size)
        (loss, (pl, sl)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.net_params, true01, log_mel, scalars, feats, state.step >= spectral_step)
        updates, opt_state = opt.update(grads, state.opt_state, state.net_params)
        net_params = optax.apply_updates(state.net_params, updates)
        return TrainState(net_params, opt_state, key, state.step + 1), StepMetrics(loss, pl, sl)

    def run(state: TrainState, n_steps: int):
        return jax.lax.scan(one_step, state, None, length=n_steps)

    return init, run


def make_train_amortized(config: AmortizedConfig) -> Callable[[Array], tuple[TrainState, StepMetrics]]:
    """A pure ``train(key) -> (final TrainState, StepMetrics per step)``: ``config.steps``
    fresh-batch steps in one ``lax.scan`` (``jax.jit(train)``; ``jax.vmap`` for seeds)."""
    init, run = make_amortized_steps(config)
    return lambda key: run(init(key), config.steps)


# ----------------------------------------------------------------------------- validation


class Validation(NamedTuple):
    true01: np.ndarray
    log_mel: Array
    scalars: Array
    feats: Features


def validation_set(config: AmortizedConfig, stage: int = C.N_STAGES - 1) -> Validation:
    """Held-out presets of ``config.val_seed`` (never trained on), rendered and analysed."""
    true01 = C.heldout_presets(config.val_seed, stage, config.val_size)
    audio, feats = rendering.render_analyze_jit(jnp.asarray(true01), rendering.render_key(config.render_seed),
                                                config.synth, config.features, config.note, 1.0)
    log_mel, scalars = jax.jit(analyse_targets, static_argnums=2)(audio, feats, config)
    return Validation(true01, log_mel, scalars, feats)


def validate(net_params, val: Validation, config: AmortizedConfig) -> dict[str, float]:
    """Median parameter loss, mean |guess - true| and median matching loss of the guesses."""
    out = _validate_jit(net_params, val, config)
    return {k: float(v) for k, v in jax.device_get(out).items()}


@functools.partial(jax.jit, static_argnums=2)
def _validate_jit(net_params, val: Validation, config: AmortizedConfig):
    net = config.net()
    cont01, logits = net.apply(net_params, val.log_mel, val.scalars)
    guess = to_params01(cont01, logits, config.discrete_head)
    true01 = jnp.asarray(val.true01)
    _, feats = rendering.render_analyze(guess, rendering.render_key(config.render_seed), config.synth,
                                        config.features, config.note, 1.0)
    total = matching_loss(feats, val.feats).total
    return {"param_loss": jnp.median(param_loss(cont01, logits, true01, config.ce_weight, config.note,
                                                config.discrete_head)),
            "param_error": jnp.mean(jnp.abs(guess - true01)),
            "guess_loss_median": jnp.median(total)}


# ----------------------------------------------------------------------------- run directory


def save_amortized(run_dir: str | os.PathLike, net_params, config: AmortizedConfig, summary: dict) -> None:
    """Write ``amortized.msgpack`` then ``amortized.json`` (with its SHA-256) atomically."""
    os.makedirs(run_dir, exist_ok=True)
    blob = flax.serialization.to_bytes(jax.device_get(net_params))
    with atomic_path(os.path.join(run_dir, PARAMS_FILE)) as tmp, open(tmp, "wb") as f:
        f.write(blob)
    meta = {"format": FORMAT, "version": VERSION, "config": dataclasses.asdict(config),
            "sha256": hashlib.sha256(blob).hexdigest(), "summary": summary}
    atomic_write(os.path.join(run_dir, META_FILE), json.dumps(meta, indent=2) + "\n")


def _config_from_dict(d: dict) -> AmortizedConfig:
    names = {f.name for f in dataclasses.fields(AmortizedConfig)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise AmortizedLoadError(f"{META_FILE}: unknown config field(s) {unknown}; {TRAIN_HINT}")
    d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    try:
        return AmortizedConfig(**d)
    except (TypeError, ValueError) as e:
        raise AmortizedLoadError(f"{META_FILE}: bad config ({e}); {TRAIN_HINT}") from e


class LoadedAmortized(NamedTuple):
    net_params: dict
    config: AmortizedConfig
    summary: dict


def is_amortized_run(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds an amortized network's metadata file."""
    return os.path.isfile(os.path.join(run_dir, META_FILE))


def load_amortized(run_dir: str | os.PathLike) -> LoadedAmortized:
    """Load a saved network; every problem raises ``AmortizedLoadError`` naming the file."""
    run_dir = os.fspath(run_dir)
    meta_path, params_path = os.path.join(run_dir, META_FILE), os.path.join(run_dir, PARAMS_FILE)
    if not os.path.isdir(run_dir):
        raise AmortizedLoadError(f"amortized run directory {run_dir!r} does not exist; {TRAIN_HINT}")
    for p in (meta_path, params_path):
        if not os.path.isfile(p):
            raise AmortizedLoadError(f"{p} is missing (is {run_dir!r} the --out of a finished "
                                     f"agents.amortized_train run?); {TRAIN_HINT}")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AmortizedLoadError(f"{meta_path} is not readable JSON ({e}); {TRAIN_HINT}") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        got = (meta.get("format"), meta.get("version")) if isinstance(meta, dict) else type(meta).__name__
        raise AmortizedLoadError(f"{meta_path} has format {got!r}; this code reads ({FORMAT!r}, "
                                 f"{VERSION}); {TRAIN_HINT}")
    config = _config_from_dict(meta.get("config") or {})
    with open(params_path, "rb") as f:
        blob = f.read()
    if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
        raise AmortizedLoadError(f"{params_path} does not match the SHA-256 recorded in {META_FILE} "
                                 f"(damaged or replaced); {TRAIN_HINT}")
    net = config.net()
    frames = config.input_dim // config.features.n_mels
    template = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, frames, config.features.n_mels)),
                                               jnp.zeros((1, N_SCALARS))))
    template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template)
    try:
        params = flax.serialization.from_bytes(template, blob)
    except Exception as e:  # msgpack/flax raise several types for a malformed state
        raise AmortizedLoadError(f"{params_path} does not hold this network's parameters ({e}); "
                                 f"{TRAIN_HINT}") from e
    shapes_ok = jax.tree.all(jax.tree.map(lambda a, b: np.shape(a) == np.shape(b), template, params))
    if not shapes_ok:
        raise AmortizedLoadError(f"{params_path}: parameter shapes differ from the config's network; "
                                 f"{TRAIN_HINT}")
    return LoadedAmortized(jax.tree.map(jnp.asarray, params), config, meta.get("summary", {}))


def train_run(config: AmortizedConfig, out_dir: str | os.PathLike | None,
              log: Callable[[str], None] = print) -> tuple[LoadedAmortized, list[dict]]:
    """Host loop: compiled chunks of ``chunk_steps`` steps; after each chunk, validation on
    held-out presets, a log line, and (with ``out_dir``) the network saved (so the run
    directory always holds the last finished chunk)."""
    init, run = make_amortized_steps(config)
    run_jit = jax.jit(run, static_argnums=1)
    val = validation_set(config)
    t0 = time.perf_counter()
    state = jax.jit(init)(jax.random.key(config.seed))
    init_s = time.perf_counter() - t0
    pca_pairs = (max(1, config.pca_samples // config.batch_size) * config.batch_size
                 if config.encoder_init == "pca" else 0)
    history, done = [], 0
    while done < config.steps:
        n = min(config.chunk_steps, config.steps - done)
        state, m = run_jit(state, n)
        done += n
        row = {"step": done, "pairs": done * config.batch_size, "seconds": round(time.perf_counter() - t0, 1),
               "train_loss": float(jnp.mean(m.loss)), "train_param_loss": float(jnp.mean(m.param_loss)),
               "train_spectral_loss": float(jnp.nanmean(m.spectral_loss)) if bool(jnp.any(~jnp.isnan(m.spectral_loss))) else None,
               **validate(state.net_params, val, config)}
        history.append(row)
        log(json.dumps(row))
        summary = {"pairs": done * config.batch_size, "pca_pairs": pca_pairs, "steps_done": done,
                   "init_seconds": round(init_s, 1), "seconds": round(time.perf_counter() - t0, 1),
                   "jax": jax.__version__, "backend": jax.default_backend(), "history": history}
        if out_dir is not None:  # after every chunk: a killed run keeps its last chunk
            save_amortized(out_dir, state.net_params, config, summary)
    return LoadedAmortized(state.net_params, config, summary), history
