"""Match one audio file (the library behind ``python -m agents.match``).

Match one audio file (any WAV/FLAC/OGG: resampled and mixed to mono by ``jaxsynth.io``; its
first ``duration_s`` are matched) and write to DIR:

* ``preset.json``: the matched preset in physical units (``jaxsynth.params.save_preset``),
* ``match.wav``: the preset rendered (``jaxsynth.io.save_audio``),
* ``ab.png``: target vs match log-mel spectrograms and the loss terms,
* ``match.json``: method, budget, loss terms, the best-so-far trajectory.

DIR is checked for writing before any work (``jaxsynth.io.check_output_dir``). Nothing is
written before the match succeeded, so a bad input leaves DIR as it was; then each file is
replaced atomically (never half-written, no temporary folder left beside DIR by a kill). A bad
input file gets the I/O layer's ``AudioFileError`` message and exit status 2.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import jax
import numpy as np

from agents import curriculum as C
from agents.evaluation.registry import POLICY_MATCHERS, build_matchers, takes_audio
from agents.plots import ab_figure
from agents.search.common import (
    MatchConfig,
    MatchResult,
    render_params,
    target_features_of_audio,
)
from jaxsynth import params as P
from jaxsynth.io import atomic_write, load_audio, save_audio
from jaxsynth.losses import LossTerms
from jaxsynth.synth import SynthConfig

POLICY_METHODS = POLICY_MATCHERS
METHODS = ("cmaes", "grad", "random") + POLICY_METHODS


@dataclass(frozen=True)
class MatchJob:
    target: str
    out_dir: str
    method: str = "cmaes"
    budget: int = 512
    seed: int = 0
    stage: int = C.N_STAGES - 1
    duration_s: float = 0.5
    policy: str | None = None  # sac_train run directory (--method sac / sac+cmaes)
    policy_mode: str = "greedy"
    pitch_first: bool = True  # estimate the target's f0 first (agents.search.pitch_first)
    pitch_method: str = "auto"  # auto (CREPE tiny if installed, else YIN), yin, crepe


def match_file(job: MatchJob) -> tuple[np.ndarray, MatchResult, np.ndarray, object]:
    """Load, match, and return (best params01, MatchResult, rendered audio, target features)."""
    if job.method in POLICY_METHODS:
        if job.policy is None:
            raise ValueError(f"--method {job.method} needs a trained policy: pass --policy RUN_DIR, the "
                             "--out of `python -m agents.sac_train` (or use cmaes, grad or random)")
    elif job.policy is not None:
        raise ValueError(f"--policy is only used by --method {' or '.join(POLICY_METHODS)}")
    if job.method not in METHODS:
        raise ValueError(f"unknown method {job.method!r}; choose one of {list(METHODS)}")
    matchers = build_matchers(job.policy, job.policy_mode, pitch_first=job.pitch_first,
                              pitch_method=job.pitch_method)
    cfg = MatchConfig(synth=SynthConfig(duration_s=job.duration_s))
    audio = load_audio(job.target, cfg.synth.sample_rate, cfg.synth.num_samples)
    target = target_features_of_audio(audio[None], cfg)
    mask = C.stage_module_masks()[job.stage]
    fn = matchers[job.method]
    extra = {"target_audio": audio[None]} if takes_audio(fn) else {}
    res = fn(jax.random.key(job.seed), target, mask, job.budget, cfg, **extra)
    best = np.asarray(res.best_params01[0])
    # preset.json keeps physical units to 6 decimals (jaxsynth.params.preset_to_dict): render
    # the preset as that file loads back, so match.wav is exactly preset.json rendered.
    as_saved = P.preset_from_dict(P.preset_to_dict(best))
    rendered, _ = render_params(as_saved[None], cfg, render_note(res))
    return best, res, np.asarray(rendered[0]), target


def render_note(res: MatchResult):
    """The (1,) MIDI note the match plays at, or None for the default ``MatchConfig.note``."""
    return None if res.render_note is None else np.asarray(res.render_note)[:1]


def write_outputs(job: MatchJob, best, res: MatchResult, rendered, target) -> list[str]:
    """Write the outputs into ``job.out_dir`` (created with normal permissions), each file
    atomically (``jaxsynth.io.atomic_path``): an interrupted run leaves every file either as
    it was or complete, and no temporary folder beside ``--out``. ``match.json`` comes last."""
    cfg = MatchConfig(synth=SynthConfig(duration_s=job.duration_s))
    out = os.path.abspath(job.out_dir)
    os.makedirs(out, exist_ok=True)
    paths = {n: os.path.join(out, n) for n in ("preset.json", "match.wav", "ab.png", "match.json")}
    P.save_preset(paths["preset.json"], best)
    save_audio(paths["match.wav"], rendered, cfg.synth.sample_rate)
    _, feats = render_params(best[None], cfg, render_note(res))
    ab_figure(paths["ab.png"], target.log_mel[0], feats.log_mel[0],
              f"{os.path.basename(job.target)}: {job.method}, budget {job.budget}, "
              f"loss {float(res.best_loss[0]):.3f}", terms=res.best_terms)
    summary = {"target": os.path.abspath(job.target), "method": job.method,
               "budget": job.budget, "renders": int(res.trace_renders[-1]), "seed": job.seed,
               "stage": job.stage, "policy": job.policy, "pitch_first": job.pitch_first,
               "render_note": float(cfg.note if res.render_note is None else np.asarray(res.render_note)[0]),
               "loss_terms": {f: float(np.asarray(getattr(res.best_terms, f))[0])
                              for f in LossTerms._fields},
               "trace_renders": [int(r) for r in res.trace_renders],
               "trace_loss": [float(v) for v in np.asarray(res.trace_loss[0])]}
    atomic_write(paths["match.json"], json.dumps(summary, indent=2) + "\n")
    return sorted(paths.values())
