"""Pitch-first matching: estimate the target's f0, play the render note there, search timbre.

Spectral losses judge pitch badly (many local minima in pitch, octave errors), so a search
over the tune parameters mostly lands on another note. Working systems estimate f0 first and
condition on it (DDSP, Engel et al. 2020; differentiable-synth sound matching with CREPE f0).
``pitch_first(matcher)`` wraps any search matcher:

1. ``target_pitch``: the note-level f0 of every target (``jaxsynth.pitch.estimate_note``: CREPE
   tiny where its weights are installed, else pure-JAX YIN; ``PitchFirstConfig.method``).
2. Pitched targets are played at the fractional MIDI note of their f0 (``MatchResult.render_note``)
   with the first oscillator's coarse and fine tune held at ``base01`` (``PITCH_HELD``), so the
   search spends nothing on pitch; the second oscillator's tune stays free, i.e. searchable
   relative to the first.
3. Where the estimate is ambiguous (``NoteF0.ambiguous``: the octave above or below scores
   close on the note's YIN d' curve, or few frames are voiced), the candidates f0, f0/2 and
   2*f0 compete first: each is played with the same ``compete_samples`` presets (``base01``
   plus random ones in the unlocked modules), the candidate whose best loss is lowest wins and
   the rest of the budget goes to it. These renders count against the budget.
4. Unpitched targets (noise, drums) get the plain matcher with every unlocked parameter free.
   Pitched targets' gradient starts keep the second oscillator and the noise quiet
   (``quiet_starts``), and gradient matching adds the pitch term (the render's aperiodicity at
   the target's f0, ``pitch_term_weight``) to its loss. Pitched targets are searched with the
   loudness term counting only what the output gain cannot make up
   (``MatchConfig.loudness_after_gain``): step 5 sets the gain, and a search that pays for the
   whole loudness difference buys level with timbre (measured: louder noise).
5. Pitch check and level (``match_level``): the match is measured (one render); where its f0
   is more than 50 cents from the target's (the free second oscillator, unison or noise can
   move the heard pitch) and a copy with the noise and the second oscillator turned down and
   the first oscillator up (``pitched_scales``, heard in the same render, one more per copy)
   reads in tune, the lowest-loss such copy replaces the match (a search that copies a noisy
   pitched target's noise gives a match read at no pitch; the right note comes before a lower
   spectral loss, ``pitched_slack``; where the search played another octave than the f0, the
   copies are the match and its quieter copies at the f0's octave); where none reads in tune, the
   lowest-loss one that reads a pitch at all is taken and its render note moves by the
   difference; the output gain moves by the loudness difference (clipped to its range); the
   final loss terms are those of the corrected preset (a second render). Every render is
   charged.
6. ``fold_note``: where the note offset fits the tune ranges, it is moved into the coarse +
   fine tune of both oscillators (and the filter's key tracking is compensated in its cutoff),
   so the preset plays the target's pitch at ``cfg.note`` like any other preset.

The f0 reaches the matchers as ``notes`` (one MIDI note per target) through
``agents.search.common.candidate_losses``; ``target_pitch`` is what a learned matcher can
condition on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp
import numpy as np

from agents.search.common import (
    MatchConfig,
    MatchResult,
    evaluate_candidates,
    free_indices,
    render_params,
    total_after_gain,
)
from jaxsynth import params as P
from jaxsynth import pitch as PP
from jaxsynth.features import Features
from jaxsynth.losses import LossTerms, matching_loss

PITCH_HELD = ("osc1.coarse_st", "osc1.fine_cents")
MAX_COARSE_ST = 24
MAX_FINE_CENTS = 100.0


@dataclass(frozen=True)
class PitchFirstConfig:
    """``method``: f0 estimator (``auto`` = CREPE tiny if installed, else YIN; ``yin``; ``crepe``).
    ``compete_samples``: presets each octave candidate is heard with (renders per candidate).
    ``level``: after the search, correct the note where the match's f0 is off and set the output
    gain from the loudness difference (2 renders).
    ``fold``: move the note offset into the tune parameters where it fits.
    ``quiet_starts``: parameters that gradient matching's random starts draw in [0, 0.3] only
    for pitched targets (``MatchConfig.start_quiet``), still searched from there; by default
    the second oscillator's and the noise's levels: uniform starts turn both up (a level of
    1/3 on average with the squared curve), Adam does not leave such a chord or noise basin in
    its few steps, and the match then reads at another f0 or none (measured: 3 of the 7 pitched
    held-out stage-3 targets at 256 renders).
    ``pitch_weight``: weight of the pitch term (``MatchConfig.pitch_weight``: the render's
    aperiodicity at the target's f0) in the search of pitched targets; None = the matcher's own
    default (``pitch_term_weight``). The final loss terms (after ``level``) are those of the
    caller's ``cfg``, without the term unless it sets one, so tables compare like with like.
    ``search_loudness``: search pitched targets with the whole loudness difference in the loss
    (off: with ``level``, only the part the output gain cannot make up counts).
    ``pitched_scales``, ``pitched_slack``: the level step's in-tune copies of a match read off
    the target's f0 (``match_level``; one render per scale, charged). The defaults were chosen
    on one seed of 64 held-out stage-3 presets and checked on another and on real notes: with
    the scales 0.8 and 0.4 and a slack of 0.2, 4 of 25 CMA-ES matches still read unpitched:
    two had in-tune copies only with the noise at 0.2 (+44 % and +118 % loss), one only an
    octave off, one was pure noise (first oscillator at 0). No slack (None): any in-tune copy
    beats a match that plays no note or the wrong one.
    ``pitched_floor``: the copies also raise the first oscillator's level to at least
    ``1 - scale`` times the louder of the noise and the second oscillator (``quieter_variants``),
    so that a match that is all noise or all second oscillator has a tone to hear.
    ``also_held``: further parameters held at ``base01`` for pitched targets; by default the
    LFO's pitch depth, which the timbre search otherwise uses to detune the note (measured: a
    20 Hz square LFO at 2 semitones put a CMA-ES match 40 cents off at 48 renders)."""

    method: str = "auto"
    compete_samples: int = 4
    also_held: tuple[str, ...] = ("lfo.to_pitch_st",)
    quiet_starts: tuple[str, ...] = ("osc2.level", "noise.level")
    pitch_weight: float | None = None
    search_loudness: bool = False
    pitched_scales: tuple[float, ...] = (0.4, 0.2)
    pitched_slack: float | None = None
    pitched_floor: bool = True
    level: bool = True
    fold: bool = True

    def __post_init__(self):
        if self.method not in PP.METHODS:
            raise ValueError(f"PitchFirstConfig.method must be one of {PP.METHODS}, got {self.method!r}")
        if self.pitch_weight is not None and not self.pitch_weight >= 0.0:
            raise ValueError(f"PitchFirstConfig.pitch_weight must be >= 0 or None, got {self.pitch_weight}")
        if not all(0.0 <= x < 1.0 for x in self.pitched_scales) or not (self.pitched_slack is None
                                                                         or self.pitched_slack >= 0.0):
            raise ValueError(f"PitchFirstConfig: pitched_scales must be in [0, 1) and pitched_slack >= 0, got "
                             f"{self.pitched_scales}, {self.pitched_slack}")
        if self.compete_samples < 1:
            raise ValueError(f"compete_samples must be >= 1, got {self.compete_samples}")


def pitch_term_weight(matcher, pcfg: PitchFirstConfig, cfg: MatchConfig) -> float:
    """The pitch term's weight for pitched targets: ``cfg.pitch_weight`` where set, else
    ``pcfg.pitch_weight`` where set, else the matcher's own default (its ``pitch_term_weight``
    attribute: 1.0 for gradient matching, where the term was measured to help; 0 otherwise)."""
    if cfg.pitch_weight > 0:
        return float(cfg.pitch_weight)
    if pcfg.pitch_weight is not None:
        return float(pcfg.pitch_weight)
    return float(getattr(matcher, "pitch_term_weight", 0.0))


def loudness_after_gain(pcfg: PitchFirstConfig, module_mask) -> bool:
    """Whether pitched targets are searched with the loudness term counting only what the output
    gain cannot make up (``MatchConfig.loudness_after_gain``): where ``level`` sets the gain
    after the search, the output module is unlocked, and ``search_loudness`` is off."""
    return bool(pcfg.level and not pcfg.search_loudness
                and np.asarray(module_mask, bool)[P.MODULES.index("output")])


def target_pitch(target_audio, sample_rate: int, method: str = "auto") -> PP.NoteF0:
    """Note-level f0 of every target (NumPy ``NoteF0``, leading axis T): what matchers condition on."""
    return PP.estimate_note(np.asarray(target_audio, np.float32), sample_rate, method)


def candidate_notes(note: PP.NoteF0, fallback_note: float) -> np.ndarray:
    """(T, 3) MIDI notes of the candidates f0, f0/2, 2*f0; a target that is not ambiguous gets
    its f0 three times; an unpitched one ``fallback_note``. Clipped to the MIDI range 0..127."""
    f0 = np.asarray(note.candidates_hz, np.float64)
    midi = 69.0 + 12.0 * np.log2(np.where(np.isfinite(f0), f0, 440.0) / 440.0)
    midi = np.where(np.asarray(note.ambiguous)[:, None], midi, midi[:, :1])
    midi = np.where(np.asarray(note.pitched)[:, None], midi, fallback_note)
    return np.clip(midi, 0.0, 127.0).astype(np.float32)


def tune_allows_pitch(module_mask) -> bool:
    """Pitch-first needs the first oscillator unlocked (else the stage holds the pitch)."""
    return bool(np.asarray(module_mask, bool)[P.MODULES.index("osc1")])


@jax.jit
def _random_presets(key, base01, free_mask):
    """(T, k, N): sample 0 = base01, the rest uniform in the free parameters, snapped."""
    t, k, n = base01.shape
    u = jax.random.uniform(key, (t, k, n))
    x = jnp.where(free_mask, u, base01).at[:, 0].set(base01[:, 0])
    return P.snap(x)


def compete(key, target: Features, cand_notes: np.ndarray, module_mask, cfg: MatchConfig,
            base01, samples: int) -> tuple[np.ndarray, LossTerms, np.ndarray]:
    """Octave candidates compete on the audio: every (target, candidate) is played with the same
    ``samples`` presets; returns (winning note (T,), its best terms, its best preset (T, N)).
    Costs ``3 * samples`` renders per target."""
    t, c = cand_notes.shape
    free = np.zeros(P.N_PARAMS, bool)
    free[list(free_indices(module_mask, cfg.held))] = True
    base = jnp.broadcast_to(jnp.asarray(base01, jnp.float32), (t, samples, P.N_PARAMS))
    presets = _random_presets(key, base, jnp.asarray(free))  # same presets for every candidate
    grid = jnp.repeat(presets[:, None], c, axis=1).reshape(t * c, samples, P.N_PARAMS)
    target_tc = jax.tree.map(lambda x: jnp.repeat(x, c, axis=0), target)
    terms = evaluate_candidates(grid, target_tc, cfg, jnp.asarray(cand_notes.reshape(-1)))
    loss = np.nan_to_num(np.asarray(terms.total).reshape(t, c, samples), nan=np.inf)
    best_sample = loss.argmin(axis=2)
    win = loss.min(axis=2).argmin(axis=1)
    idx = np.arange(t) * c + win
    s = best_sample[np.arange(t), win]
    pick = lambda x: np.asarray(x)[idx, s]
    return (cand_notes[np.arange(t), win], jax.tree.map(pick, terms),
            np.asarray(presets)[np.arange(t), s])


def _best_of(a_loss, a_terms, a_params, b_loss, b_terms, b_params):
    """Per target, whichever of two (terms, params) has the lower total loss (ties: a)."""
    a_wins = np.asarray(a_loss) <= np.asarray(b_loss)
    pick = lambda x, y: np.where(a_wins.reshape((-1,) + (1,) * (np.ndim(x) - 1)), x, y)
    return pick(np.asarray(a_params), np.asarray(b_params)), jax.tree.map(
        lambda x, y: pick(np.asarray(x), np.asarray(y)), a_terms, b_terms)


QUIETER = ("noise.level", "osc2.level")  # what a pitched variant of a match turns down
TONE = "osc1.level"  # what it turns up (with ``floor``): the oscillator that plays the note


def quieter_variants(params01: np.ndarray, scales: tuple[float, ...], floor: bool = False) -> np.ndarray:
    """(T, 1 + len(scales), N): each match, then copies with the noise's and the second
    oscillator's normalized levels times each of ``scales`` (the parameters with which the
    timbre search covers a pitched target with noise or a chord). With ``floor``, a copy's
    first-oscillator level is also raised to at least ``1 - scale`` times the louder of the two
    levels it turned down: level moves to the oscillator that plays the note (a match of pure
    noise, first oscillator at 0, otherwise has no copy that reads a pitch)."""
    x = np.asarray(params01, np.float32)
    out = np.repeat(x[:, None], 1 + len(scales), axis=1)
    louder = np.max(x[:, [P.INDEX[name] for name in QUIETER]], axis=1)
    for j, scale in enumerate(scales):
        for name in QUIETER:
            out[:, 1 + j, P.INDEX[name]] *= scale
        if floor:
            out[:, 1 + j, P.INDEX[TONE]] = np.maximum(x[:, P.INDEX[TONE]], (1.0 - scale) * louder)
    return out


def copies_at_target_note(variants: np.ndarray, notes: np.ndarray, target_f0_hz, tolerance_cents: float = 50.0,
                          ) -> tuple[np.ndarray, np.ndarray]:
    """(variants, their render notes), both (T, V, ...): where a pitched target's match plays
    whole octaves (within ``tolerance_cents``) from the note of ``target_f0_hz`` (the octave
    competition chose f0/2 or 2*f0, and the level step checks against f0), the copies play
    those octaves closer, at the f0's octave, and the first copy is the match itself, followed
    by the first V - 2 of the quieter copies; the match (index 0) and every other target keep
    the render note (a render note a fraction of an octave from the f0's note is a preset's
    own tune offset, not the competition's). Measured on 64 held-out stage-3 presets: such
    matches often read an octave off or unpitched, and the note move the level step would make
    after them reads differently from what was measured (noise, filters and a second
    oscillator do not transpose like the note)."""
    notes = np.asarray(notes, np.float32)
    f0 = np.asarray(target_f0_hz, np.float64) if target_f0_hz is not None else np.full(notes.shape, np.nan)
    apart = 69.0 + 12.0 * np.log2(np.where(np.isfinite(f0), f0, 440.0) / 440.0) - notes
    octaves = np.round(apart / 12.0)
    moved = np.isfinite(f0) & (octaves != 0) & (np.abs(apart - 12.0 * octaves) * 100.0 <= tolerance_cents)
    out = np.array(variants, np.float32, copy=True)
    out_notes = np.repeat(notes[:, None], out.shape[1], axis=1)
    out[moved, 1:] = np.concatenate([out[moved, :1], out[moved, 1:-1]], axis=1)
    shifted = np.clip(notes + 12.0 * octaves, 0.0, 127.0).astype(np.float32)
    out_notes[moved, 1:] = shifted[moved, None]
    return out, out_notes


def _losses_of(feats: Features, params01, target: Features, cfg: MatchConfig) -> np.ndarray:
    """(T, V) totals of rendered variants with the loudness the output gain can make up left
    out (``total_after_gain``): the level step that follows sets the gain."""
    target_b = jax.tree.map(lambda v: jnp.asarray(v)[:, None], target)
    terms = matching_loss(feats, target_b, cfg.weights)
    return np.asarray(total_after_gain(terms, jnp.asarray(params01), feats.loudness_lufs,
                                       target_b.loudness_lufs, cfg.weights))


def match_level(target: Features, params01: np.ndarray, notes: np.ndarray, module_mask,
                cfg: MatchConfig, target_f0_hz: np.ndarray | None = None, method: str = "yin",
                tolerance_cents: float = 50.0, pitched_scales: tuple[float, ...] = (),
                pitched_slack: float | None = None, pitched_floor: bool = False,
                ) -> tuple[np.ndarray, np.ndarray, LossTerms]:
    """Correct the match's pitch and level after the search (2 renders per target, plus one per
    entry of ``pitched_scales``).

    One render measures the match: where its note-level f0 is more than ``tolerance_cents`` from
    ``target_f0_hz`` (the timbre search can move the heard pitch with the second oscillator, the
    unison or the noise), the render note moves by the difference, which transposes the whole
    sound; the output gain moves by the loudness difference in LU (the gain is the last linear
    factor, so loudness moves dB for dB), clipped to its range. A second render gives the final
    loss terms. Returns (params01, notes, terms); the gain stays where the output module is locked.

    Where the search played whole octaves from the target's f0 (the octave competition's
    pick), the copies play at the f0's octave, the first of them the match itself
    (``copies_at_target_note``): a transposition that is heard before it is taken.

    ``pitched_scales``: where the target is pitched but the match reads unpitched or more than
    ``tolerance_cents`` off (a search that copies a noisy target's noise, or its chord), the same
    measuring render also hears the match with its noise and second oscillator turned down
    (``quieter_variants``, ``pitched_floor``); the lowest-loss copy that reads within
    ``tolerance_cents`` of the target's f0 replaces the match, if its loss (without the
    loudness the gain makes up) is at most ``1 + pitched_slack`` times the match's (None: at
    any loss; a heard in-tune copy is preferred to a transposition, which is not re-measured).
    Where none does, the lowest-loss of the match and those copies that reads a pitch is the
    one the render note moves for (a noisy match read unpitched whose quieter copy reads an
    octave off is transposed by that octave)."""
    i = P.INDEX["output.gain_db"]
    spec = P.SPECS[i]
    x = np.asarray(params01, np.float32).copy()
    notes = np.asarray(notes, np.float32).copy()
    t = x.shape[0]
    variants = quieter_variants(x, pitched_scales if target_f0_hz is not None else (), pitched_floor)
    v = variants.shape[1]
    variant_notes = np.repeat(notes[:, None], v, axis=1)
    if v > 1:
        variants, variant_notes = copies_at_target_note(variants, notes, target_f0_hz, tolerance_cents)
    audio, feats = render_params(variants.reshape(t * v, P.N_PARAMS), cfg, variant_notes.reshape(-1))
    if target_f0_hz is not None:
        ref = np.repeat(np.asarray(target_f0_hz, np.float64), v)
        match_f0 = np.asarray(PP.estimate_note(np.asarray(audio), cfg.synth.sample_rate, method).f0_hz)
        off = PP.cents_between(np.where(np.isfinite(ref), ref, 1.0), np.where(np.isfinite(match_f0), match_f0, 1.0))
        off = np.where(np.isfinite(match_f0) & np.isfinite(ref), off, np.nan).reshape(t, v)
        choice = np.zeros(t, np.int64)
        if v > 1:
            feats_tv = jax.tree.map(lambda a: jnp.asarray(a).reshape((t, v) + a.shape[1:]), feats)
            loss = _losses_of(feats_tv, variants, target, cfg)
            in_tune = np.abs(np.nan_to_num(off, nan=np.inf)) <= tolerance_cents
            allowed = np.ones_like(in_tune)
            if pitched_slack is not None:
                allowed[:, 1:] = loss[:, 1:] <= loss[:, :1] * (1.0 + pitched_slack)
            astray = np.isfinite(np.asarray(target_f0_hz)) & ~in_tune[:, 0]
            ok = in_tune & allowed
            ok[:, 0] = False
            heard = np.isfinite(off) & allowed
            rescue = astray & ok.any(axis=1)
            transpose = astray & ~rescue & heard.any(axis=1)
            choice = np.where(rescue, np.where(ok, loss, np.inf).argmin(axis=1),
                              np.where(transpose, np.where(heard, loss, np.inf).argmin(axis=1), 0))
            x = variants[np.arange(t), choice]
            notes = variant_notes[np.arange(t), choice]
        rows = np.arange(t) * v + choice
        feats = jax.tree.map(lambda a: np.asarray(a)[rows], feats)
        off = off[np.arange(t), choice]
        fix = np.isfinite(off) & (np.abs(np.nan_to_num(off)) > tolerance_cents)
        notes = np.where(fix, np.clip(notes + np.nan_to_num(off) / 100.0, 0.0, 127.0), notes).astype(np.float32)
    delta_db = np.asarray(target.loudness_lufs) - np.asarray(feats.loudness_lufs)
    if np.asarray(module_mask, bool)[P.MODULES.index("output")]:
        gain_db = np.asarray(P.denormalize(jnp.asarray(x)))[:, i] + np.nan_to_num(delta_db)
        x[:, i] = (np.clip(gain_db, spec.low, spec.high) - spec.low) / (spec.high - spec.low)
    terms = evaluate_candidates(jnp.asarray(x)[:, None], target, cfg, jnp.asarray(notes))
    return x, notes, jax.tree.map(lambda v: np.asarray(v)[:, 0], terms)


def level_renders(pcfg: PitchFirstConfig, fix_pitch: bool = True) -> int:
    """Renders the level step (``level_step``) charges per target: the measuring render, one per
    in-tune copy (only when it checks the pitch), the final one."""
    return 2 + (len(pcfg.pitched_scales) if fix_pitch else 0)


def level_step(pcfg: PitchFirstConfig, target: Features, params01: np.ndarray, notes: np.ndarray, module_mask,
               cfg: MatchConfig, target_f0_hz: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, LossTerms]:
    """``match_level`` as ``pcfg`` sets it up (its estimator and in-tune copies); the pitch is
    checked where ``target_f0_hz`` is given (None: level only). Every matcher's final step."""
    return match_level(target, params01, notes, module_mask, cfg, target_f0_hz, pcfg.method,
                       pitched_scales=pcfg.pitched_scales, pitched_slack=pcfg.pitched_slack,
                       pitched_floor=pcfg.pitched_floor)


def fold_note(params01: np.ndarray, notes: np.ndarray, ref_note: float) -> tuple[np.ndarray, np.ndarray]:
    """Move each target's note offset from ``ref_note`` into the coarse + fine tune of both
    oscillators where every value stays in range (a silent second oscillator's tune is clipped
    instead); the filter cutoff is moved by
    ``key_track * offset`` semitones so that key tracking hears the same note. Returns
    (params01, render notes): ``ref_note`` where folded, the original note elsewhere."""
    x = np.asarray(params01, np.float32)
    phys = np.asarray(P.denormalize(jnp.asarray(x)), np.float64).copy()
    offset = np.asarray(notes, np.float64) - ref_note
    coarse = np.round(offset)
    fine = 100.0 * (offset - coarse)
    c1, f1 = P.INDEX["osc1.coarse_st"], P.INDEX["osc1.fine_cents"]
    c2, f2 = P.INDEX["osc2.coarse_st"], P.INDEX["osc2.fine_cents"]
    cut, kt = P.INDEX["filter.cutoff_hz"], P.INDEX["filter.key_track"]
    # coarse choices are indices 0..48 for -24..+24 semitones
    new = phys.copy()
    new[:, c1] = phys[:, c1] + coarse
    new[:, c2] = phys[:, c2] + coarse
    new[:, f1] = phys[:, f1] + fine
    new[:, f2] = phys[:, f2] + fine
    new[:, cut] = phys[:, cut] * 2.0 ** (phys[:, kt] * offset / 12.0)
    spec_cut = P.SPECS[cut]
    silent_osc2 = phys[:, P.INDEX["osc2.level"]] <= 0.0
    new[:, c2] = np.where(silent_osc2, np.clip(new[:, c2], 0, 2 * MAX_COARSE_ST), new[:, c2])
    new[:, f2] = np.where(silent_osc2, np.clip(new[:, f2], -MAX_FINE_CENTS, MAX_FINE_CENTS), new[:, f2])
    ok = ((new[:, [c1, c2]] >= 0) & (new[:, [c1, c2]] <= 2 * MAX_COARSE_ST)).all(axis=1)
    ok &= (np.abs(new[:, [f1, f2]]) <= MAX_FINE_CENTS).all(axis=1)
    ok &= (new[:, cut] >= spec_cut.low) & (new[:, cut] <= spec_cut.high)
    presets = []
    for row_old, row_new, good in zip(x, new, ok):
        if not good:
            presets.append(row_old)
            continue
        d = P.preset_to_dict(row_old)
        d["osc1.coarse_st"] = str(int(row_new[c1]) - MAX_COARSE_ST)
        d["osc2.coarse_st"] = str(int(row_new[c2]) - MAX_COARSE_ST)
        d["osc1.fine_cents"] = float(row_new[f1])
        d["osc2.fine_cents"] = float(row_new[f2])
        d["filter.cutoff_hz"] = float(row_new[cut])
        presets.append(P.preset_from_dict(d))
    out_notes = np.where(ok, ref_note, notes).astype(np.float32)
    return np.stack(presets).astype(np.float32), out_notes


def _subset(target: Features, idx: np.ndarray) -> Features:
    return jax.tree.map(lambda x: x[idx], target)


def _trace_at(res: MatchResult, renders: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best-so-far loss and params of ``res`` after each of ``renders`` (inf before its first)."""
    k = np.searchsorted(np.asarray(res.trace_renders), renders, side="right") - 1
    loss = np.asarray(res.trace_loss)
    params = np.asarray(res.trace_params01)
    safe = np.clip(k, 0, None)
    out_loss = np.where(k[None] >= 0, loss[:, safe], np.inf)
    return out_loss, params[:, safe]


def pitch_first(matcher, pcfg: PitchFirstConfig = PitchFirstConfig()):
    """``matcher`` (random search, CMA-ES, gradient matching, or any search matcher taking
    ``notes=``) with pitch first, octave candidates, fallback and level (module docstring).

    The wrapped matcher takes the target audio (``target_audio=``, shape (T, samples)) besides
    the features and returns a ``MatchResult`` whose ``render_note`` says the MIDI note each
    target's match plays at (``cfg.note`` where the offset was folded into the tune)."""

    def wrapped(key, target, module_mask, budget, cfg: MatchConfig = MatchConfig(), base01=P.DEFAULT_PARAMS01,
                target_audio=None, target_params01=None, **extras):
        if target_audio is None:
            raise ValueError("pitch-first matching needs the target audio (target_audio=, shape (targets, samples))")
        audio = np.asarray(target_audio, np.float32)
        t = audio.shape[0]
        base01 = np.asarray(base01, np.float32)
        if not tune_allows_pitch(module_mask):
            return matcher(key, target, module_mask, budget, cfg, base01=base01, **extras)
        note = target_pitch(audio, cfg.synth.sample_rate, pcfg.method)
        pitched = np.asarray(note.pitched)
        k_compete, k_search, k_plain = jax.random.split(key, 3)
        budget = int(budget)
        level_cost = level_renders(pcfg) if pcfg.level else 0
        results = {}
        groups = []
        if pitched.any():
            groups.append(("pitched", np.nonzero(pitched)[0]))
        if (~pitched).any():
            groups.append(("plain", np.nonzero(~pitched)[0]))
        for name, idx in groups:
            tgt = _subset(target, idx)
            if name == "pitched":
                pcfg_match = replace(cfg, held=tuple(dict.fromkeys(cfg.held + PITCH_HELD + pcfg.also_held)),
                                     start_quiet=tuple(dict.fromkeys(cfg.start_quiet + pcfg.quiet_starts)),
                                     pitch_weight=pitch_term_weight(matcher, pcfg, cfg),
                                     loudness_after_gain=loudness_after_gain(pcfg, module_mask))
                cands = candidate_notes(jax.tree.map(lambda v: np.asarray(v)[idx], note), cfg.note)
                spent = 0
                comp = None
                if np.asarray(note.ambiguous)[idx].any() and budget - level_cost >= 3 * pcfg.compete_samples + 2:
                    comp = compete(k_compete, tgt, cands, module_mask, pcfg_match, base01, pcfg.compete_samples)
                    notes, spent = comp[0], 3 * pcfg.compete_samples
                else:
                    notes = cands[:, 0]
                inner = matcher(k_search, tgt, module_mask, budget - spent - level_cost, pcfg_match, base01=base01,
                                notes=jnp.asarray(notes), **extras)
                results[name] = (idx, inner, notes, spent, comp, pcfg_match)
            else:
                inner = matcher(k_plain, tgt, module_mask, budget - level_cost, cfg, base01=base01, **extras)
                results[name] = (idx, inner, np.full(len(idx), cfg.note, np.float32), 0, None, cfg)
        target_f0 = np.where(pitched, np.asarray(note.f0_hz), np.nan)
        return _assemble(results, t, target, module_mask, cfg, pcfg, level_cost, target_f0)

    wrapped.takes_audio = True
    wrapped.inner = matcher
    return wrapped


def _assemble(results, t, target, module_mask, cfg, pcfg, level_cost, target_f0) -> MatchResult:
    """Join the groups' results on one render axis, add competition, level and fold."""
    renders = np.unique(np.concatenate(
        [spent + np.asarray(r.trace_renders) for _, r, _, spent, _, _ in results.values()]
        + [np.asarray([spent]) for _, _, _, spent, comp, _ in results.values() if comp is not None]))
    renders = renders[renders > 0]
    trace_loss = np.full((t, len(renders)), np.inf, np.float32)
    trace_params = np.zeros((t, len(renders), P.N_PARAMS), np.float32)
    best_params = np.zeros((t, P.N_PARAMS), np.float32)
    best_terms = None
    notes_out = np.zeros(t, np.float32)
    for idx, res, notes, spent, comp, _ in results.values():
        loss, params = _trace_at(res, renders - spent)
        bp, bt = np.asarray(res.best_params01), jax.device_get(res.best_terms)
        if comp is not None:
            c_loss = np.asarray(comp[1].total)
            early = renders[None] >= spent
            better = early & (c_loss[:, None] < loss)
            loss = np.where(better, c_loss[:, None], loss)
            params = np.where(better[..., None], comp[2][:, None], params)
            bp, bt = _best_of(res.best_loss, bt, bp, c_loss, comp[1], comp[2])
        trace_loss[idx], trace_params[idx], best_params[idx], notes_out[idx] = loss, params, bp, notes
        if best_terms is None:
            best_terms = jax.tree.map(lambda x: np.zeros((t,) + np.shape(x)[1:], np.float32), bt)
        for field, x in zip(LossTerms._fields, bt):
            getattr(best_terms, field)[idx] = x
    if pcfg.level:
        lev_params, notes_out, lev_terms = level_step(pcfg, target, best_params, notes_out, module_mask, cfg,
                                                      target_f0)
        best_params = lev_params
        best_terms = jax.tree.map(np.asarray, lev_terms)
        renders = np.append(renders, renders[-1] + level_cost)
        trace_loss = np.concatenate([trace_loss, np.asarray(best_terms.total)[:, None]], axis=1)
        trace_params = np.concatenate([trace_params, best_params[:, None]], axis=1)
    if pcfg.fold:
        best_params, notes_out = fold_note(best_params, notes_out, cfg.note)
    best_terms = LossTerms(*(jnp.asarray(x) for x in best_terms))
    return MatchResult(jnp.asarray(best_params), best_terms.total, best_terms, renders.astype(np.int64),
                       jnp.asarray(trace_loss), jnp.asarray(trace_params), notes_out)
