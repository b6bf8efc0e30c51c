"""``python -m agents.match TARGET.wav [--method cmaes|grad|random|sac|sac+cmaes] [--policy RUN_DIR]
[--budget N] --out DIR``

Match one audio file (any WAV/FLAC/OGG: resampled and mixed to mono by ``jaxsynth.io``; its
first ``duration_s`` are matched) and write to DIR:

* ``preset.json``: the matched preset in physical units (``jaxsynth.params.save_preset``),
* ``match.wav``: the preset rendered (``jaxsynth.io.save_audio``),
* ``ab.png``: target vs match log-mel spectrograms and the loss terms,
* ``match.json``: method, budget, loss terms, the best-so-far trajectory.

Everything is written to a temporary folder next to DIR first and moved in only when all of
it exists, so a failure (a bad file, an interrupted run) leaves DIR as it was. A bad input file
gets the I/O layer's ``AudioFileError`` message and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass

import jax
import numpy as np

from agents import curriculum as C
from agents.checkpoint import CheckpointError
from agents.evaluate import MATCHERS, register_policy, takes_audio
from agents.matchers import MatchConfig, MatchResult, render_params, target_features_of_audio
from jaxsynth import params as P
from jaxsynth.io import AudioFileError, load_audio, save_audio
from jaxsynth.losses import LossTerms
from jaxsynth.synth import SynthConfig

POLICY_METHODS = ("sac", "sac+cmaes")
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


def match_file(job: MatchJob) -> tuple[np.ndarray, MatchResult, np.ndarray, object]:
    """Load, match, and return (best params01, MatchResult, rendered audio, target features)."""
    if job.method in POLICY_METHODS:
        if job.policy is None:
            raise ValueError(f"--method {job.method} needs a trained policy: pass --policy RUN_DIR, the "
                             "--out of `python -m agents.sac_train` (or use cmaes, grad or random)")
        register_policy(job.policy, job.policy_mode)
    elif job.policy is not None:
        raise ValueError(f"--policy is only used by --method {' or '.join(POLICY_METHODS)}")
    if job.method not in MATCHERS:
        raise ValueError(f"unknown method {job.method!r}; choose one of {sorted(MATCHERS)}")
    cfg = MatchConfig(synth=SynthConfig(duration_s=job.duration_s))
    audio = load_audio(job.target, cfg.synth.sample_rate, cfg.synth.num_samples)
    target = target_features_of_audio(audio[None], cfg)
    mask = C.stage_module_masks()[job.stage]
    fn = MATCHERS[job.method]
    extra = {"target_audio": audio[None]} if takes_audio(fn) else {}
    res = fn(jax.random.key(job.seed), target, mask, job.budget, cfg, **extra)
    best = np.asarray(res.best_params01[0])
    rendered, _ = render_params(best[None], cfg)
    return best, res, np.asarray(rendered[0]), target


def ab_figure(path: str, target_log_mel, match_log_mel, terms: LossTerms, title: str) -> None:
    """Target and match log-mel (dB, loudness-normalised) side by side, plus the loss terms."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6), gridspec_kw={"width_ratios": [1, 1, 0.8]})
    lo = float(min(np.min(target_log_mel), np.min(match_log_mel)))
    hi = float(max(np.max(target_log_mel), np.max(match_log_mel)))
    for a, m, name in ((ax[0], target_log_mel, "target"), (ax[1], match_log_mel, "match")):
        im = a.imshow(np.asarray(m).T, origin="lower", aspect="auto", vmin=lo, vmax=hi, cmap="magma")
        a.set_title(f"{name} log-mel (dB)")
        a.set_xlabel("frame")
        a.set_ylabel("mel band")
    fig.colorbar(im, ax=ax[1])
    names = [f for f in LossTerms._fields]
    vals = [float(np.asarray(getattr(terms, f))[0]) for f in names]
    ax[2].barh(names, vals, color="tab:blue")
    for i, v in enumerate(vals):
        ax[2].text(v, i, f" {v:.3g}", va="center", fontsize=8)
    ax[2].set_title("loss terms (match vs target)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(job: MatchJob, best, res: MatchResult, rendered, target) -> list[str]:
    """Write all outputs into a temp folder, then move them into ``job.out_dir``."""
    cfg = MatchConfig(synth=SynthConfig(duration_s=job.duration_s))
    out = os.path.abspath(job.out_dir)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", dir=parent)
    try:
        P.save_preset(os.path.join(tmp, "preset.json"), best)
        save_audio(os.path.join(tmp, "match.wav"), rendered, cfg.synth.sample_rate)
        _, feats = render_params(best[None], cfg)
        ab_figure(os.path.join(tmp, "ab.png"), target.log_mel[0], feats.log_mel[0], res.best_terms,
                  f"{os.path.basename(job.target)}: {job.method}, budget {job.budget}, "
                  f"loss {float(res.best_loss[0]):.3f}")
        summary = {"target": os.path.abspath(job.target), "method": job.method,
                   "budget": job.budget, "seed": job.seed, "stage": job.stage, "policy": job.policy,
                   "loss_terms": {f: float(np.asarray(getattr(res.best_terms, f))[0])
                                  for f in LossTerms._fields},
                   "trace_renders": [int(r) for r in res.trace_renders],
                   "trace_loss": [float(v) for v in np.asarray(res.trace_loss[0])]}
        with open(os.path.join(tmp, "match.json"), "w") as f:
            json.dump(summary, f, indent=2)
        names = sorted(os.listdir(tmp))
        if not os.path.exists(out):
            os.replace(tmp, out)
        else:
            for n in names:
                os.replace(os.path.join(tmp, n), os.path.join(out, n))
            os.rmdir(tmp)
        return [os.path.join(out, n) for n in names]
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agents.match", description=__doc__.split("\n\n")[1])
    ap.add_argument("target", help="audio file to match (WAV/FLAC/OGG)")
    ap.add_argument("--method", choices=METHODS, default="cmaes")
    ap.add_argument("--budget", type=int, default=512, help="renders (default 512)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stage", type=int, default=C.N_STAGES - 1,
                    help="curriculum stage whose modules may change (default: all modules)")
    ap.add_argument("--duration-s", type=float, default=0.5)
    ap.add_argument("--policy", default=None, metavar="RUN_DIR",
                    help="trained policy for --method sac/sac+cmaes: the --out of agents.sac_train")
    ap.add_argument("--policy-mode", choices=("greedy", "sample"), default="greedy")
    ap.add_argument("--out", required=True, help="output folder")
    a = ap.parse_args(argv)
    job = MatchJob(a.target, a.out, a.method, a.budget, a.seed, a.stage, a.duration_s, a.policy,
                   a.policy_mode)
    try:
        if not 0 <= job.stage < C.N_STAGES:
            raise ValueError(f"--stage must be in [0, {C.N_STAGES - 1}], got {job.stage}")
        if job.budget < 1:
            raise ValueError(f"--budget must be >= 1, got {job.budget}")
        best, res, rendered, target = match_file(job)
        files = write_outputs(job, best, res, rendered, target)
    except (AudioFileError, ValueError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"loss {float(res.best_loss[0]):.4f} after {int(res.trace_renders[-1])} renders")
    for f in files:
        print(f"wrote {f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
