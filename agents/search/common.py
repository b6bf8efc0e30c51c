"""Search-based sound matchers sharing one objective and one render budget: random search and
gradient matching (optax Adam through ``render`` + loss). CMA-ES lives in ``agents.cmaes``.

Every matcher minimises ``matching_loss(analyze(render(params01)), target_features).total``
over the normalized parameters of the *unlocked* modules; locked parameters hold ``base01``
(the stage defaults). Many targets are matched at once: candidates for all targets are
rendered as one batch of ``targets * population`` sounds. The **budget is counted in renders**
(render + analysis + loss of one sound) per target, so matchers are compared at equal cost.

A gradient step is charged ``MatchConfig.grad_step_renders`` renders. Default 7: on this
2-core CPU one ``grad_match`` step (value_and_grad of render + analyze + loss, plus Adam) over
the harness's batch of 8 targets x 4 starts took 7.0x (stage 0) and 7.7x (full synth) the
process CPU time of the forward evaluation of the same 32 candidates (jax 0.10.2, 0.5 s clips,
2026-12-01; ``benchmarks/cmaes_throughput.py --grad-only`` re-measures it). The ratio depends
on the batch: 17x at 1 x 4 (the match CLI), ~5x at 16 x 4, as the backward pass of the
per-sample scans has a fixed cost that small batches do not amortise; reverse mode's
cheap-gradient bound (Griewank & Walther 2008, sec. 4.6: ~4-5x the function) holds only at
the larger batches.

Every sound is rendered with ONE fixed key (``MatchConfig.render_seed``), the same key used
for synth-rendered targets, so a matcher's objective is deterministic (noise and unison phases
do not change between candidates) and the true preset of an in-domain target has loss 0.

Discrete parameters (filter type, waveform choice, unison voices): random search and CMA-ES
snap them (``params.snap``) before rendering
and report snapped values; gradient matching *holds* them at each start's snapped value (they
have no gradient), so restarts from random points are what explores the discrete choices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from agents import rendering
from jaxsynth import params as P
from jaxsynth import pitch as PP
from jaxsynth.features import FeatureConfig, Features, analyze
from jaxsynth.losses import LossTerms, LossWeights, matching_loss
from jaxsynth.synth import SynthConfig

GRAD_STEP_RENDERS = 7


@dataclass(frozen=True)
class MatchConfig:
    """Static settings shared by all matchers (hashable: a static argument under jit)."""

    synth: SynthConfig = SynthConfig()
    weights: LossWeights = LossWeights()
    note: float = 60.0
    velocity: float = 1.0
    render_seed: int = 0
    grad_step_renders: int = GRAD_STEP_RENDERS
    features_override: FeatureConfig | None = field(default=None)
    held: tuple[str, ...] = ()  # parameters held at base01 although their module is unlocked
    # parameters whose random starting points are drawn in [0, start_quiet_max] instead of
    # [0, 1] (still searched from there): pitch-first names the second oscillator's and the
    # noise's levels, so that no gradient start begins as a loud two-note chord or as noise
    start_quiet: tuple[str, ...] = ()
    start_quiet_max: float = 0.3
    # weight of the pitch term: the render's aperiodicity at the render note's f0
    # (``jaxsynth.pitch.aperiodicity_at``), added to the total where matchers pass ``notes``
    # (pitch-first: the note is the target's f0); 0 = off
    pitch_weight: float = 0.0
    # the loudness term counts only the part of the loudness difference that the output gain
    # cannot make up from the candidate's own gain within its range (``loudness_beyond_gain``):
    # pitch-first's level step sets the gain from the loudness difference after the search, so
    # a search that pays for the whole difference trades timbre for level
    loudness_after_gain: bool = False

    @property
    def features(self) -> FeatureConfig:
        """Analysis settings; sample rate and duration always those of the synth."""
        if self.features_override is not None:
            return self.features_override
        return FeatureConfig(sample_rate=self.synth.sample_rate, duration_s=self.synth.duration_s)

    def __post_init__(self):
        fc = self.features
        if fc.sample_rate != self.synth.sample_rate or fc.num_samples != self.synth.num_samples:
            raise ValueError("MatchConfig: features_override must use the synth's sample rate and "
                             f"length ({self.synth.sample_rate} Hz, {self.synth.num_samples} samples)")
        if not 0.0 <= self.start_quiet_max <= 1.0:
            raise ValueError(f"start_quiet_max must be in [0, 1], got {self.start_quiet_max}")
        if not self.pitch_weight >= 0.0:
            raise ValueError(f"pitch_weight must be >= 0, got {self.pitch_weight}")
        if self.grad_step_renders < 1:
            raise ValueError(f"grad_step_renders must be >= 1, got {self.grad_step_renders}")
        unknown = [n for n in self.held + self.start_quiet if n not in P.INDEX]
        if unknown:
            raise ValueError(f"MatchConfig.held/start_quiet: unknown parameter(s) {unknown}; names are "
                             "jaxsynth.params.NAMES")


class MatchResult(NamedTuple):
    """What every matcher returns, for ``T`` targets and ``K`` trace points.

    ``trace_*`` is the best-so-far trajectory: after ``trace_renders[k]`` renders per target the
    best loss found was ``trace_loss[:, k]`` at ``trace_params01[:, k]``. ``best_terms`` holds
    every loss term of the best candidate (for the evaluation table, without re-rendering).
    """

    best_params01: Float[Array, "T n_params"]
    best_loss: Float[Array, "T"]
    best_terms: LossTerms
    trace_renders: Int[np.ndarray, "K"]
    trace_loss: Float[Array, "T K"]
    trace_params01: Float[Array, "T K n_params"]
    render_note: np.ndarray | None = None  # (T,) MIDI note each target's match plays; None: cfg.note


def free_indices(module_mask, held: tuple[str, ...] = ()) -> tuple[int, ...]:
    """Indices of the parameters a matcher may change: those of the unlocked modules, less the
    ``held`` ones (e.g. the first oscillator's tune when the render note carries the pitch)."""
    mask = np.asarray(module_mask, bool)
    if mask.shape != (P.N_MODULES,):
        raise ValueError(f"module_mask must have shape ({P.N_MODULES},) (one bool per entry of "
                         f"jaxsynth.params.MODULES), got {mask.shape}")
    held_idx = {P.INDEX[n] for n in held}
    idx = tuple(int(i) for i in np.nonzero(P.MODULE_PARAMS[mask].any(axis=0))[0] if int(i) not in held_idx)
    if not idx:
        raise ValueError("module_mask unlocks no module: nothing to match")
    return idx


def expand(free01: Float[Array, "*b F"], base01: Float[Array, "n_params"],
           free_idx: tuple[int, ...]) -> Float[Array, "*b n_params"]:
    """Free coordinates -> full normalized vector (locked entries from ``base01``), clipped to
    [0, 1] and snapped."""
    full = jnp.broadcast_to(jnp.asarray(base01, jnp.float32), free01.shape[:-1] + (P.N_PARAMS,))
    full = full.at[..., jnp.asarray(free_idx)].set(free01)
    return P.snap(jnp.clip(full, 0.0, 1.0))


def render_key(cfg: MatchConfig) -> Array:
    """The one key every matcher (and a synth-rendered target) renders with
    (``agents.rendering.render_key`` of ``cfg.render_seed``)."""
    return rendering.render_key(cfg.render_seed)


def render_features(params01: Float[Array, "B n_params"], cfg: MatchConfig,
                    notes: Float[Array, "B"] | None = None) -> tuple[Array, Features]:
    """Render a flat batch with the fixed key and analyse it: (audio (B, samples), Features).
    ``notes``: one MIDI note per sound (default ``cfg.note`` for all)."""
    note = cfg.note if notes is None else notes
    return rendering.render_analyze(params01, render_key(cfg), cfg.synth, cfg.features, note,
                                    cfg.velocity)


def loudness_beyond_gain(params01: Float[Array, "*b n_params"], delta_lu: Float[Array, "*b"]) -> Float[Array, "*b"]:
    """LU of a loudness shortfall (``delta_lu`` = target - candidate) that moving the output
    gain from the candidate's own value to the ends of its range cannot make up: 0 where the
    gain can reach the target's loudness (the gain is the last linear factor, so loudness moves
    dB for dB with it), else the distance past the nearer end. Differentiable in both."""
    spec = P.SPECS[P.INDEX["output.gain_db"]]
    gain_db = P.denormalize(params01)[..., P.INDEX["output.gain_db"]]
    wanted = gain_db + delta_lu
    return jnp.maximum(wanted - spec.high, 0.0) + jnp.maximum(spec.low - wanted, 0.0)


def total_after_gain(terms: LossTerms, params01: Float[Array, "*b n_params"], loudness_lufs: Float[Array, "*b"],
                     target_loudness_lufs: Float[Array, "*b"], weights) -> Float[Array, "*b"]:
    """``terms.total`` with its loudness term counting only the shortfall the output gain cannot
    make up (``loudness_beyond_gain``) instead of the whole loudness difference."""
    excess = loudness_beyond_gain(params01, target_loudness_lufs - loudness_lufs)
    return terms.total + weights.loudness_lu * (excess - terms.loudness_lu)


def candidate_losses(params01: Float[Array, "T C n_params"], target: Features,
                     cfg: MatchConfig, notes: Float[Array, "T"] | None = None) -> LossTerms:
    """Loss terms of ``C`` candidates for each of ``T`` targets, rendered as ONE batch of T*C.
    ``notes``: the MIDI note each target's candidates are played at (default ``cfg.note``).
    With ``cfg.pitch_weight`` > 0 and ``notes`` given, ``total`` also holds the weighted
    aperiodicity of each render at its note's f0 (no term of its own: the other terms are the
    spectral ones, unchanged). With ``cfg.loudness_after_gain``, ``total`` weighs the loudness
    shortfall the output gain cannot make up instead of the whole difference (``loudness_lu``
    stays the whole difference)."""
    t, c = params01.shape[:2]
    flat_notes = None if notes is None else jnp.repeat(jnp.asarray(notes, jnp.float32), c)
    audio, feats = render_features(params01.reshape(t * c, P.N_PARAMS), cfg, flat_notes)
    feats = jax.tree.map(lambda x: x.reshape((t, c) + x.shape[1:]), feats)
    target_b = jax.tree.map(lambda x: x[:, None], target)
    terms = matching_loss(feats, target_b, cfg.weights)
    if cfg.loudness_after_gain:
        terms = terms._replace(total=total_after_gain(terms, params01, feats.loudness_lufs,
                                                      target_b.loudness_lufs, cfg.weights))
    if cfg.pitch_weight == 0 or notes is None:
        return terms
    pcfg = PP.PitchConfig(sample_rate=cfg.synth.sample_rate)
    aperiodic = PP.aperiodicity_at(audio, PP.midi_to_hz(flat_notes), pcfg).reshape(t, c)
    return terms._replace(total=terms.total + cfg.pitch_weight * aperiodic)


evaluate_candidates = jax.jit(candidate_losses, static_argnames="cfg")


def render_params(params01: Float[Array, "B n_params"], cfg: MatchConfig,
                  notes=None) -> tuple[Array, Features]:
    """Jitted ``render_features`` (audio and features of presets, rendered with the fixed key);
    ``notes`` (B,) plays each preset at its own MIDI note (default ``cfg.note``)."""
    if notes is not None:
        return _render_notes_jit(jnp.asarray(params01, jnp.float32), cfg, jnp.asarray(notes, jnp.float32))
    return rendering.render_analyze_jit(jnp.asarray(params01, jnp.float32), render_key(cfg), cfg.synth,
                                        cfg.features, cfg.note, cfg.velocity)


_render_notes_jit = jax.jit(render_features, static_argnames="cfg")


def target_features_of_params(params01: Float[Array, "T n_params"], cfg: MatchConfig) -> Features:
    """Features of synth-rendered targets (same fixed key as the matchers)."""
    return render_params(P.validate_params01(params01), cfg)[1]


def target_features_of_audio(audio: Float[Array, "T samples"], cfg: MatchConfig) -> Features:
    """Features of audio targets (e.g. WAV files loaded with ``jaxsynth.io.load_audio``)."""
    audio = jnp.asarray(audio, jnp.float32)
    if audio.ndim != 2 or audio.shape[1] != cfg.synth.num_samples:
        raise ValueError(f"target audio must have shape (targets, {cfg.synth.num_samples}), got "
                         f"{audio.shape}; load files with num_samples=cfg.synth.num_samples")
    return jax.jit(analyze, static_argnames="cfg")(audio, cfg=cfg.features)


class Best(NamedTuple):
    """Best-so-far per target: every loss term and the (snapped) parameters."""

    terms: LossTerms
    params01: Float[Array, "T n_params"]


def init_best(t: int, base01) -> Best:
    inf = jnp.full((t,), jnp.inf)
    return Best(LossTerms(*([inf] * len(LossTerms._fields))),
                jnp.broadcast_to(jnp.asarray(base01, jnp.float32), (t, P.N_PARAMS)))


@jax.jit
def update_best(best: Best, terms: LossTerms, params01: Float[Array, "T C n_params"]) -> Best:
    """Best-so-far over a new batch of candidates (selected on ``terms.total``, NaN never wins)."""
    loss = jnp.where(jnp.isnan(terms.total), jnp.inf, terms.total)
    i = jnp.argmin(loss, axis=1)
    pick = lambda x: jnp.take_along_axis(x, i.reshape((-1,) + (1,) * (x.ndim - 1)), axis=1)[:, 0]
    better = pick(loss) < best.terms.total
    new_terms = LossTerms(*[jnp.where(better, pick(x), b) for x, b in zip(terms, best.terms)])
    return Best(new_terms, jnp.where(better[:, None], pick(params01), best.params01))


def check_budget(budget: int, per_step: int, what: str) -> int:
    """Number of whole steps of ``per_step`` renders that fit ``budget`` (at least one)."""
    if int(budget) < per_step:
        raise ValueError(f"budget of {budget} renders per target is below one {what} "
                         f"({per_step} renders); raise the budget or shrink the {what}")
    return int(budget) // per_step


def check_targets(target: Features, base01) -> int:
    """Number of targets (leading axis of the features); validates ``base01``."""
    t = target.loudness_lufs.shape
    if len(t) != 1:
        raise ValueError(f"target features need one leading (targets,) axis, got loudness shape {t}")
    if np.shape(base01) != (P.N_PARAMS,):
        raise ValueError(f"base01 must have shape ({P.N_PARAMS},), got {np.shape(base01)}")
    return t[0]


def finish(best: Best, trace: list[Best], renders_per_step: int) -> MatchResult:
    """Stack the per-step best-so-far snapshots into a ``MatchResult``."""
    return MatchResult(
        best_params01=best.params01, best_loss=best.terms.total, best_terms=best.terms,
        trace_renders=renders_per_step * np.arange(1, len(trace) + 1),
        trace_loss=jnp.stack([b.terms.total for b in trace], axis=1),
        trace_params01=jnp.stack([b.params01 for b in trace], axis=1))


def default_population(num_free: int) -> int:
    """CMA-ES's default population size 4 + floor(3 ln n) (Hansen 2016, Table 1)."""
    return 4 + int(math.floor(3 * math.log(max(num_free, 1))))
