"""The matcher registry: every matcher of the harness and the match CLI by name, built
explicitly by ``build_matchers`` (no module-level state).

A matcher is a function ``(key, target_features, module_mask, budget, cfg, base01, **extras)
-> MatchResult`` (``agents.search.common``). ``then_cmaes(first, share)`` builds "first, then
CMA-ES refine" for any first stage; ``policy_matcher(policy)`` drives a learned policy (one
charged render per step) and takes the target audio as well (``takes_audio``).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from agents.sac.amortized import (
    LoadedAmortized,
    guess_params01,
    is_amortized_run,
    load_amortized,
    target_scalars,
)
from agents.search.cmaes import cmaes_match
from agents.search.common import (
    MatchConfig,
    MatchResult,
    check_budget,
    check_targets,
    finish,
    free_indices,
    init_best,
    render_params,
    update_best,
)
from agents.search.gradient import grad_match
from agents.search.pitch_first import (
    MAX_COARSE_ST,
    PITCH_HELD,
    PitchFirstConfig,
    fold_note,
    level_renders,
    level_step,
    target_pitch,
    tune_allows_pitch,
)
from agents.search.pitch_first import pitch_first as with_pitch_first
from agents.search.random_search import random_search
from jaxsynth import params as P
from jaxsynth import pitch
from jaxsynth.losses import matching_loss

Matcher = Callable[..., MatchResult]
SEARCH_MATCHERS = ("random", "cmaes", "grad")
AMORTIZED_MATCHERS = ("amortized", "amortized+level", "amortized+cmaes", "amortized+gain+cmaes")
POLICY_MATCHERS = ("sac", "sac+cmaes") + AMORTIZED_MATCHERS
AMORTIZED_SIGMA = 0.1  # CMA-ES step size from the amortized guess (normalized units)
# CMA-ES step size from the learned matcher's best, which CMA-ES refines holding its pitch
# (benchmarks/learned_refine.py on seed-1 presets, chosen there and reported on the harness's
# seed-0 presets: benchmarks/RESULTS.md, "Learned matcher, third pass")
LEARNED_SIGMA = 0.08


class MatcherTable(dict):
    """``{name: matcher}`` whose missing names raise a ValueError that says what provides them."""

    def __missing__(self, name):
        if name in AMORTIZED_MATCHERS:
            hint = ("needs a run directory holding an amortized network (--policy RUN_DIR, the --out of "
                    "`python -m agents.amortized_train`)")
        elif name in POLICY_MATCHERS:
            hint = "needs a `python -m agents.sac_train` run directory (--policy RUN_DIR)"
        else:
            hint = f"known here: {sorted(self)}"
        raise ValueError(f"matcher {name!r} is not available: it {hint}" if name in POLICY_MATCHERS
                         else f"unknown matcher {name!r}; {hint}")


def build_matchers(policy_run: str | None = None, policy_mode: str = "greedy",
                   seed_index: int = 0, pitch_first: bool = True, pitch_method: str = "auto"
                   ) -> dict[str, Matcher]:
    """``{name: matcher}``: random search, CMA-ES and gradient matching, plus, given a trained
    ``python -m agents.sac_train`` run directory, "sac" (the policy alone; from the amortized
    guess, with the guess's own rows, when the run was trained with ``--amortized``) and
    "sac+cmaes" (the policy with a quarter of the budget, then CMA-ES refinement from its best
    with step size ``LEARNED_SIGMA``, holding its pitch); given a run
    directory that holds an amortized network (``python -m agents.amortized_train``),
    "amortized" (its guess, one render) and "amortized+cmaes" (the guess, then CMA-ES with the
    rest of the budget).
    Raises ``agents.sac.policy.PolicyLoadError`` for an unusable SAC run directory and
    ``agents.sac.amortized.AmortizedLoadError`` for an unusable amortized network; asking the
    returned table for a matcher it lacks raises a ValueError saying what provides it.

    ``pitch_first``: the search matchers estimate the target's f0 first and play the render
    note there (``agents.search.pitch_first``; f0 by ``pitch_method``: auto, yin or crepe); the
    learned matchers ("sac", "sac+cmaes"), whose policy edits at the env's fixed note (the
    amortized guess reads the target's f0), end with the level and pitch correction
    (``then_level``: 4 of their renders), and "sac+cmaes"'s CMA-ES holds the policy's pitch
    (``then_cmaes(hold_pitch=True)``)."""
    matchers: dict[str, Matcher] = {"random": random_search, "cmaes": cmaes_match, "grad": grad_match}
    pcfg = PitchFirstConfig(method=pitch_method)
    if pitch_first:
        matchers = {name: with_pitch_first(fn, pcfg) for name, fn in matchers.items()}
    amortized_run = policy_run is not None and is_amortized_run(policy_run)
    if amortized_run:
        matchers.update(amortized_matchers(load_amortized(policy_run), pitch_first))
    if policy_run is not None and (not amortized_run or os.path.isdir(os.path.join(policy_run, "checkpoints"))):
        from agents.sac.policy import load_policy  # noqa: PLC0415 (loads orbax state)
        loaded = load_policy(policy_run, seed_index)
        if loaded.amortized is not None:  # trained from the guess: the guess's own rows come with it
            matchers.update(amortized_matchers(loaded.amortized, pitch_first))
        sac = learned_policy(loaded, policy_mode, pitch_first)
        learned = {"sac": sac, "sac+cmaes": then_cmaes(sac, sigma0=LEARNED_SIGMA, hold_pitch=True)}
        if pitch_first:  # the policy edits at the env's note: check the pitch (and level) at the end
            learned = {name: then_level(fn, first_budget=None, pcfg=pcfg) for name, fn in learned.items()}
        matchers.update(learned)
    return MatcherTable(matchers)


def learned_policy(loaded, policy_mode: str = "greedy", tune_from_f0: bool = True) -> Matcher:
    """A loaded ``python -m agents.sac_train`` run (``agents.sac.policy.load_policy``) as a
    matcher: the policy's edits, from the amortized guess (its first charged render; transposed
    to the target's f0 with ``tune_from_f0``) where the run was trained from one."""
    from agents.sac.policy import SACPolicy  # noqa: PLC0415 (loads orbax state)
    start = None if loaded.amortized is None else amortized_guess(loaded.amortized, tune_from_f0)
    return policy_matcher(SACPolicy(loaded, policy_mode), start=start)


def tune_to_f0(params01: np.ndarray, target_semis: np.ndarray, pitched: np.ndarray) -> np.ndarray:
    """Transpose each preset so that its louder oscillator's tune (coarse + fine, semitones re the
    render note) equals ``target_semis``: both oscillators move by the same interval, so the
    second keeps its interval to the first. Unpitched targets, non-finite estimates and presets
    whose audible tunes would leave their range are returned unchanged (a silent oscillator's
    tune is clipped instead). Pure NumPy, no render."""
    x = np.asarray(params01, np.float32)
    phys = np.asarray(P.denormalize(jnp.asarray(x)), np.float64).copy()
    coarse = [P.INDEX["osc1.coarse_st"], P.INDEX["osc2.coarse_st"]]
    fine = [P.INDEX["osc1.fine_cents"], P.INDEX["osc2.fine_cents"]]
    level = phys[:, [P.INDEX["osc1.level"], P.INDEX["osc2.level"]]]
    tune = phys[:, coarse] - MAX_COARSE_ST + phys[:, fine] / 100.0  # (T, 2) semitones re the note
    louder = np.argmax(level, axis=1)
    shift = np.asarray(target_semis, np.float64) - tune[np.arange(len(x)), louder]
    new_tune = tune + shift[:, None]
    new_coarse = np.round(new_tune)
    audible = level > 0.0
    in_range = np.abs(new_coarse) <= MAX_COARSE_ST
    ok = (np.asarray(pitched, bool) & np.isfinite(shift) & (in_range | ~audible).all(axis=1))
    new = phys.copy()
    new[:, coarse] = np.clip(new_coarse, -MAX_COARSE_ST, MAX_COARSE_ST) + MAX_COARSE_ST
    new[:, fine] = np.clip(100.0 * (new_tune - new_coarse), -100.0, 100.0)
    moved = x.copy()  # only the four tune entries change (a round trip of the rest is not exact)
    cols = coarse + fine
    moved[:, cols] = np.asarray(P.snap(P.normalize(jnp.asarray(new, jnp.float32))))[:, cols]
    return np.where(ok[:, None], moved, x).astype(np.float32)


def unfold_tune(params01: np.ndarray, ref_note: float, base01) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of pitch-first's ``fold_note``: move each preset's first-oscillator tune
    (coarse + fine, relative to ``base01``'s) into the render note, so that a search holding
    that tune (``PITCH_HELD``) keeps the preset's pitch. The second oscillator keeps its
    interval to the first (its tune moves by the same amount, clipped to range: only an
    interval of more than two octaves is changed) and the filter cutoff moves by ``-key_track
    * offset`` semitones so that key tracking hears the same note (clipped to its range).
    Returns (params01, render notes). Pure NumPy, no render."""
    x = np.asarray(params01, np.float32)
    phys = np.asarray(P.denormalize(jnp.asarray(x)), np.float64)
    base = np.asarray(P.denormalize(jnp.asarray(base01, jnp.float32)), np.float64)
    c1, f1 = P.INDEX["osc1.coarse_st"], P.INDEX["osc1.fine_cents"]
    c2, f2 = P.INDEX["osc2.coarse_st"], P.INDEX["osc2.fine_cents"]
    cut, kt = P.INDEX["filter.cutoff_hz"], P.INDEX["filter.key_track"]
    offset = (phys[:, c1] - base[c1]) + (phys[:, f1] - base[f1]) / 100.0  # semitones
    tune2 = phys[:, c2] - MAX_COARSE_ST + phys[:, f2] / 100.0 - offset
    coarse2 = np.clip(np.round(tune2), -MAX_COARSE_ST, MAX_COARSE_ST)
    spec_cut = P.SPECS[cut]
    new = phys.copy()
    new[:, c1], new[:, f1] = base[c1], base[f1]
    new[:, c2] = coarse2 + MAX_COARSE_ST
    new[:, f2] = np.clip(100.0 * (tune2 - coarse2), -100.0, 100.0)
    new[:, cut] = np.clip(phys[:, cut] * 2.0 ** (-phys[:, kt] * offset / 12.0), spec_cut.low, spec_cut.high)
    cols = [c1, f1, c2, f2, cut]  # only these change (a round trip of the rest is not exact)
    moved = x.copy()
    moved[:, cols] = np.asarray(P.snap(P.normalize(jnp.asarray(new, jnp.float32))))[:, cols]
    return moved, (ref_note + offset).astype(np.float32)


def amortized_guess(loaded: LoadedAmortized, tune_from_f0: bool = False) -> Callable:
    """``guess(target, target_audio, cfg, module_mask, base01) -> params01 (T, N)``: the
    network's preset for each target (no render). Its inputs are the target's log-mel and
    loudness (from the target features) and its YIN note f0 (from the target audio). Locked
    parameters are reset to ``base01``. ``tune_from_f0`` (pitch-first): the guess is then
    transposed to play the target's YIN f0 exactly (``tune_to_f0``) where the oscillators are
    free. The network was trained at one clip length, render note and analysis; other settings
    are refused."""
    config, params = loaded.config, loaded.net_params

    @jax.jit
    def net_guess(lm, audio, loud):
        f0 = pitch.note_from_yin(audio, config.pitch)
        scalars = target_scalars(f0, loud, config.note)
        return guess_params01(config.net(), params, lm, scalars, config.discrete_head), scalars

    def guess(target, target_audio, cfg, module_mask, base01):
        if target_audio is None:
            raise ValueError("the amortized guess needs the target audio (target_audio=, shape "
                             "(targets, samples)) for its f0 input")
        if cfg.synth.duration_s != config.duration_s or cfg.note != config.note or cfg.features != config.features:
            raise ValueError(f"the amortized network was trained on {config.duration_s} s clips at note "
                             f"{config.note} with the default analysis; got {cfg.synth.duration_s} s, note "
                             f"{cfg.note}: retrain it (python -m agents.amortized_train --duration-s ...)")
        free = np.zeros(P.N_PARAMS, bool)
        free[list(free_indices(module_mask))] = True
        x, scalars = net_guess(target.log_mel, jnp.asarray(target_audio, jnp.float32), target.loudness_lufs)
        osc_free = all(free[P.INDEX[f"osc{k}.{n}"]] for k in (1, 2) for n in ("coarse_st", "fine_cents"))
        if tune_from_f0 and osc_free:  # scalars: f0 re the note in semitones / 24, pitched
            sc = np.asarray(scalars)
            x = jnp.asarray(tune_to_f0(np.asarray(x), 24.0 * sc[:, 0], sc[:, 1] > 0.5))
        return P.snap(jnp.clip(jnp.where(free, x, jnp.asarray(base01, jnp.float32)), 0.0, 1.0))

    return guess


def amortized_matcher(loaded: LoadedAmortized, tune_from_f0: bool = False) -> Matcher:
    """The amortized network's guess (``amortized_guess``) as a matcher: ONE charged render
    (the guess), whatever the budget."""
    guess = amortized_guess(loaded, tune_from_f0)

    def matcher(key, target, module_mask, budget, cfg=MatchConfig(), base01=P.DEFAULT_PARAMS01,
                target_audio=None, target_params01=None):
        del key, target_params01
        t = check_targets(target, base01)
        check_budget(budget, 1, "guess")
        x = guess(target, target_audio, cfg, module_mask, base01)
        _, feats = render_params(x, cfg)
        terms = jax.tree.map(lambda v: v[:, None], _loss_jit(feats, target, cfg.weights))
        best = update_best(init_best(t, base01), terms, x[:, None])
        return finish(best, [best], 1)

    matcher.takes_audio = True
    return matcher


def then_level(first: Matcher, fix_pitch: bool = True, first_budget: int | None = 1,
               pcfg: PitchFirstConfig = PitchFirstConfig()) -> Matcher:
    """``first``, then the pitch-first matchers' level and pitch correction of its best preset
    (``agents.search.pitch_first.level_step`` with ``pcfg``'s in-tune copies: the output gain
    moves by the loudness difference; unless ``fix_pitch`` is False, a match of a pitched
    target that reads off its f0 is replaced by an in-tune copy with its noise and second
    oscillator turned down, or transposed; ``level_renders(pcfg, fix_pitch)`` more renders,
    charged). ``first`` gets ``first_budget`` renders (None: all the budget but those), so the
    whole matcher spends ``first_budget`` plus the level step's renders (or the budget).
    For pitched targets the corrected preset is kept even where its spectral loss is higher
    (the right note comes first, as in pitch-first matching); elsewhere the lower loss wins."""
    cost = level_renders(pcfg, fix_pitch)

    def matcher(key, target, module_mask, budget, cfg=MatchConfig(), base01=P.DEFAULT_PARAMS01,
                target_audio=None, target_params01=None):
        check_budget(budget, (1 if first_budget is None else int(first_budget)) + cost,
                     "search and level correction")
        b1 = int(budget) - cost if first_budget is None else int(first_budget)
        r1 = first(key, target, module_mask, b1, cfg, base01=base01, target_audio=target_audio,
                   target_params01=target_params01)
        used = int(r1.trace_renders[-1])
        t = r1.best_params01.shape[0]
        notes_in = np.full(t, cfg.note, np.float32) if r1.render_note is None else np.asarray(r1.render_note)
        target_f0 = None
        if fix_pitch:
            f0 = target_pitch(target_audio, cfg.synth.sample_rate, pcfg.method)
            target_f0 = np.where(np.asarray(f0.pitched), np.asarray(f0.f0_hz), np.nan)
        x, notes, terms = level_step(pcfg, target, np.asarray(r1.best_params01), notes_in, module_mask, cfg,
                                     target_f0)
        win = np.asarray(terms.total) < np.asarray(r1.best_loss)
        if target_f0 is not None:
            win |= np.isfinite(target_f0)
        pick = lambda a, b: np.where(win.reshape((-1,) + (1,) * (np.ndim(a) - 1)), a, b)
        best_x = pick(x, np.asarray(r1.best_params01))
        best_terms = jax.tree.map(lambda a, b: jnp.asarray(pick(np.asarray(a), np.asarray(b))), terms,
                                  r1.best_terms)
        return MatchResult(jnp.asarray(best_x), best_terms.total, best_terms,
                           np.concatenate([r1.trace_renders, [used + cost]]),
                           jnp.concatenate([r1.trace_loss, best_terms.total[:, None]], axis=1),
                           jnp.concatenate([r1.trace_params01, jnp.asarray(best_x)[:, None]], axis=1),
                           np.where(win, notes, notes_in).astype(np.float32))

    matcher.takes_audio = True
    return matcher


def amortized_matchers(loaded: LoadedAmortized, tune_from_f0: bool = False) -> dict[str, Matcher]:
    """"amortized" (the guess, 1 render), "amortized+level" (the guess with its loudness and
    pitch corrected, 4 renders) and "amortized+cmaes" (the guess, then CMA-ES from it with step
    size ``AMORTIZED_SIGMA`` and the rest of the budget); "amortized+gain+cmaes" corrects the
    guess's output gain first (3 renders, the render note stays) and hands that to CMA-ES."""
    guess = amortized_matcher(loaded, tune_from_f0)
    return {"amortized": guess, "amortized+level": then_level(guess),
            "amortized+cmaes": then_cmaes(guess, sigma0=AMORTIZED_SIGMA, first_budget=1),
            "amortized+gain+cmaes": then_cmaes(then_level(guess, fix_pitch=False),
                                               sigma0=AMORTIZED_SIGMA, first_budget=3)}


def then_cmaes(first: Matcher, share: float = 0.25, sigma0: float = 0.15,
               first_budget: int | None = None, hold_pitch: bool = False) -> Matcher:
    """``first`` with ``share`` of the budget (at least one render; exactly ``first_budget``
    renders where given), then CMA-ES from its best preset with the rest (step size ``sigma0``:
    a local refinement). The trace is the two traces joined.

    ``hold_pitch``: CMA-ES keeps the first stage's pitch, as pitch-first matching does: the
    first oscillator's tune moves into the render note (``unfold_tune``) and is held there, so
    the refinement searches timbre (and the second oscillator's interval) only; its presets are
    folded back into the tune at the end (``fold_note``; ``render_note`` says where that did not
    fit). Without it a step size of 0.1 moves the coarse tune by ~5 semitones per sample, and
    the refinement lands on another note for most pitched targets (benchmarks/RESULTS.md,
    "Learned matcher, third pass")."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"share must be in (0, 1), got {share}")

    def refine(key, target, module_mask, budget, cfg, base01, start):
        if not (hold_pitch and tune_allows_pitch(module_mask)):
            return cmaes_match(key, target, module_mask, budget, cfg, base01=base01, init01=start,
                               sigma0=sigma0)
        start, notes = unfold_tune(np.asarray(start), cfg.note, base01)
        held = replace(cfg, held=tuple(dict.fromkeys(cfg.held + PITCH_HELD)))
        r = cmaes_match(key, target, module_mask, budget, held, base01=base01, init01=start,
                        sigma0=sigma0, notes=jnp.asarray(notes))
        t, k = r.trace_params01.shape[:2]
        best, best_note = fold_note(np.asarray(r.best_params01), notes, cfg.note)
        trace, _ = fold_note(np.asarray(r.trace_params01).reshape(t * k, -1), np.repeat(notes, k), cfg.note)
        return r._replace(best_params01=jnp.asarray(best), render_note=best_note,
                          trace_params01=jnp.asarray(trace.reshape(t, k, -1)))

    def matcher(key, target, module_mask, budget, cfg=MatchConfig(), base01=P.DEFAULT_PARAMS01,
                **target_extras):
        k1, k2 = jax.random.split(key)
        b1 = int(first_budget) if first_budget is not None else max(1, int(round(budget * share)))
        r1 = first(k1, target, module_mask, b1, cfg, base01=base01, **target_extras)
        used = int(r1.trace_renders[-1])
        r2 = refine(k2, target, module_mask, budget - used, cfg, base01, r1.best_params01)
        better = r1.best_loss[:, None] <= r2.trace_loss  # (T, K2): keep r1's best where CMA-ES is worse
        tl2 = jnp.where(better, r1.best_loss[:, None], r2.trace_loss)
        tp2 = jnp.where(better[..., None], r1.best_params01[:, None], r2.trace_params01)
        win = r1.best_loss <= r2.best_loss
        pick = lambda a, b: jnp.where(win.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
        notes = lambda r: np.full(win.shape, cfg.note, np.float32) if r.render_note is None else r.render_note
        note = None
        if r1.render_note is not None or r2.render_note is not None:
            note = np.where(np.asarray(win), notes(r1), notes(r2)).astype(np.float32)
        return MatchResult(pick(r1.best_params01, r2.best_params01), pick(r1.best_loss, r2.best_loss),
                           jax.tree.map(pick, r1.best_terms, r2.best_terms),
                           np.concatenate([r1.trace_renders, used + r2.trace_renders]),
                           jnp.concatenate([r1.trace_loss, tl2], axis=1),
                           jnp.concatenate([r1.trace_params01, tp2], axis=1), note)

    matcher.takes_audio = takes_audio(first)
    return matcher


_loss_jit = jax.jit(matching_loss, static_argnames="weights")


def takes_audio(matcher: Matcher) -> bool:
    """Whether a matcher wants the target audio (``target_audio=``, ``target_params01=``
    keywords) besides the target features: policy matchers compute their own observation."""
    return bool(getattr(matcher, "takes_audio", False))


def policy_matcher(policy, explore_after_first: bool = True, start: Callable | None = None) -> Matcher:
    """A matcher that follows a policy, one charged render per step: the harness render of the
    proposed preset whose loss picks the best-so-far (the start preset is the first render:
    ``base01``, or ``start(target, target_audio, cfg, module_mask, base01) -> params01 (T, N)``
    where given, e.g. ``amortized_guess`` for a policy trained from that guess).

    ``policy`` has ``episode_steps`` (int), ``prepare(target_audio (T, S), target_params01
    (T, N) or None) -> ctx`` (the target side of its observation, computed once) and
    ``propose(key, params01 (T, N), ctx, module_mask (N_MODULES,), sample: bool) -> params01
    (T, N)`` (e.g. ``agents.policy.SACPolicy``). Episodes of ``episode_steps`` edits; each
    episode after the first restarts from the best preset found so far, with sampled actions
    when ``explore_after_first`` (a deterministic policy would otherwise repeat the same
    episode). Locked parameters are reset to ``base01`` after every proposal.
    """
    ep_steps = int(policy.episode_steps)
    if ep_steps < 1:
        raise ValueError(f"policy.episode_steps must be >= 1, got {ep_steps}")

    def matcher(key, target, module_mask, budget, cfg=MatchConfig(), base01=P.DEFAULT_PARAMS01,
                target_audio=None, target_params01=None):
        t = check_targets(target, base01)
        if target_audio is None:
            raise ValueError("a policy matcher needs the target audio (target_audio=, shape "
                             "(targets, samples)) to build its own observation")
        free = np.zeros(P.N_PARAMS, bool)
        free[list(free_indices(module_mask))] = True
        base = jnp.asarray(base01, jnp.float32)
        ctx = policy.prepare(jnp.asarray(target_audio, jnp.float32),
                             None if target_params01 is None else jnp.asarray(target_params01, jnp.float32))
        if start is None:
            x = P.snap(jnp.broadcast_to(base, (t, P.N_PARAMS)))
        else:
            x = jnp.asarray(start(target, target_audio, cfg, module_mask, base01), jnp.float32)
        best, trace = init_best(t, base), []
        mask = np.asarray(module_mask, bool)
        episode, edits = 0, 0
        keys = jax.random.split(key, int(budget))
        for s in range(int(budget)):
            _, feats = render_params(x, cfg)
            terms = jax.tree.map(lambda v: v[:, None], _loss_jit(feats, target, cfg.weights))
            best = update_best(best, terms, x[:, None])
            trace.append(best)
            if s + 1 == int(budget):
                break
            if edits == ep_steps:  # next episode from the best preset so far
                episode, edits, x = episode + 1, 0, best.params01
            x = jnp.asarray(policy.propose(keys[s], x, ctx, mask, explore_after_first and episode > 0))
            x = P.snap(jnp.clip(jnp.where(free, x, base), 0.0, 1.0))
            edits += 1
        return finish(best, trace, 1)

    matcher.takes_audio = True
    return matcher
