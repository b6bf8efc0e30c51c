"""Issue 8 item 3a: which CREPE layer, and frame-wise or frame-averaged, for the embedding term?

For each base sound (a held-out curriculum preset of ``--stage`` with osc1 tuned to the played
note, played at a random MIDI note in ``[--note-lo, --note-hi]``) we render known perturbations
and measure, for every CREPE block 1..6 and both poolings, the relative L2 embedding distance to
the base (``perceptual.embedding_distance`` for frame-wise; the same on embeddings averaged over
the base's audible frames for frame-mean), plus reference distances (pitch-posterior W1 in
cents, MR-STFT, the D3 total):

* ``sweep``: the base detuned by c cents, c in +-SWEEP_CENTS (timbre fixed).
* ``mixed``: every sweep offset again, each with its own random timbre change (the non-pitch
  parameters of the stage moved by N(0, ``--mixed-sigma``) in normalised units), i.e. what a
  search sees when both pitch and timbre are off.
* ``timbre``: timbre changes of size ``--timbre-sigmas`` at equal pitch.

Scores per base (median and IQR over bases):

* ``rho_pitch``: Spearman correlation of distance with |c| on the sweep.
* ``mono``: fraction of adjacent sweep steps (|c| increasing, each side) where the distance grows.
* ``rho_pitch_mixed``: Spearman of distance with |c| on the mixed set (pitch ranking when the
  timbre differs too; the selection criterion).
* ``rho_timbre``: Spearman of distance with the timbre sigma at equal pitch (> 0: the term still
  sees timbre, so it does not fight the spectral terms).
* with ``--vibrato``: the base with a 0.5-semitone sine vibrato at 5 Hz against the same vibrato
  at 5.5-10 Hz (equal pitch distribution, different time course): ``vib_rate_rho`` = Spearman of
  distance with the rate difference, ``vib_vs_50c`` = their mean distance over the distance of a
  static 50-cent detune (how much of the metric's own scale a wrong vibrato rate is worth). Not
  part of the selection rule (added after the first two runs).

Selection rule (fixed before running): highest median ``rho_pitch_mixed``; ties within 0.02
broken by ``mono``, then by lower cost. Cost: analytic MACs of the blocks up to the layer and the
measured jitted forward time per clip (the pitch term needs all six blocks anyway).

    PYTHONPATH=. python benchmarks/perceptual_study.py --bases 8 --out study.jsonl

Prints one JSON line per (layer, pooling) and reference, and a markdown table; record ``uptime``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import emit_jsonl  # noqa: E402
from jaxsynth import crepe as C  # noqa: E402
from jaxsynth import features as F
from jaxsynth import losses as L
from jaxsynth import params as PR
from jaxsynth import perceptual as P
from jaxsynth.synth import SynthConfig, render_batch

SWEEP_CENTS = (0, 5, 10, 20, 35, 50, 75, 100, 150, 200, 300, 500, 700, 1200)
POOLINGS = ("framewise", "framemean")
VIBRATO_RATES_HZ = (5.0, 5.5, 6.5, 8.0, 10.0)  # the first is the reference
VIBRATO_DEPTH_ST = 0.5
_PITCH_PARAMS = ("osc1.coarse_st", "osc1.fine_cents")


@dataclass(frozen=True)
class StudyConfig:
    bases: int = 8
    stage: int = 1
    model: str = "tiny"
    hop_16k: int = 400
    duration_s: float = 0.5
    note_lo: float = 36.0
    note_hi: float = 72.0
    mixed_sigma: float = 0.1
    timbre_sigmas: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.4)
    timbre_draws: int = 2
    min_voiced_fraction: float = 0.5
    seed: int = 0
    vibrato: bool = False
    out: str | None = None


def emit(record: dict, cfg: StudyConfig) -> None:
    emit_jsonl(record, cfg.out)


def timbre_indices(stage: int) -> np.ndarray:
    """Unlocked parameters of ``stage`` that do not set pitch (osc1 coarse/fine excluded)."""
    from agents import curriculum as CU  # noqa: PLC0415
    free = np.asarray(PR.param_mask(CU.stage_module_masks()[stage]))
    keep = np.array([n not in _PITCH_PARAMS for n in PR.NAMES])
    return np.flatnonzero(free & keep)


def variants(base01: np.ndarray, note: float, rng: np.random.Generator, cfg: StudyConfig, idx: np.ndarray):
    """(params01 (V, N), notes (V,), kind (V,), cents (V,), sigma (V,)) of one base's variants."""
    offsets = np.array(sorted({s * c for c in SWEEP_CENTS for s in (-1, 1)}), np.float64)
    rows, notes, kind, cents, sigma = [], [], [], [], []

    def perturb(s):
        x = base01.copy()
        x[idx] = np.clip(x[idx] + s * rng.standard_normal(idx.size), 0.0, 1.0)
        return x

    for c in offsets:
        rows.append(base01); notes.append(note + c / 100); kind.append("sweep"); cents.append(c); sigma.append(0.0)
    for c in offsets:
        rows.append(perturb(cfg.mixed_sigma)); notes.append(note + c / 100); kind.append("mixed")
        cents.append(c); sigma.append(cfg.mixed_sigma)
    for s in cfg.timbre_sigmas:
        for _ in range(cfg.timbre_draws):
            rows.append(perturb(s)); notes.append(note); kind.append("timbre"); cents.append(0.0); sigma.append(s)
    return (np.stack(rows).astype(np.float32), np.asarray(notes, np.float32), np.asarray(kind),
            np.asarray(cents), np.asarray(sigma))


def vibrato_set(base01: np.ndarray) -> np.ndarray:
    """The base with a sine LFO of VIBRATO_DEPTH_ST on pitch at each VIBRATO_RATES_HZ (V, N).

    Every variant has the same pitch distribution over a cycle; only the pitch's time course
    differs, which a frame-averaged distance cannot see and a frame-wise one can.
    """
    phys = np.asarray(PR.denormalize(jnp.asarray(PR.DEFAULT_PARAMS01)))
    rows = []
    for rate in VIBRATO_RATES_HZ:
        p = phys.copy()
        p[PR.NAMES.index("lfo.rate_hz")], p[PR.NAMES.index("lfo.to_pitch_st")] = rate, VIBRATO_DEPTH_ST
        unit = np.asarray(PR.normalize(jnp.asarray(p)))
        x = base01.copy()
        for name in ("lfo.rate_hz", "lfo.to_pitch_st"):
            x[PR.NAMES.index(name)] = unit[PR.NAMES.index(name)]
        x[PR.NAMES.index("lfo.shape")] = PR.DEFAULT_PARAMS01[PR.NAMES.index("lfo.shape")]  # sine
        rows.append(x)
    return np.stack(rows).astype(np.float32)


def vibrato_scores(dv: np.ndarray, d: np.ndarray, kind: np.ndarray, cents: np.ndarray) -> dict:
    """``vib_rate_rho``: Spearman(distance to the 5 Hz vibrato, |rate - 5 Hz|); ``vib_vs_50c``: mean
    distance of the other rates over the distance of a static 50-cent detune (the metric's own
    scale)."""
    shift = np.abs(np.asarray(VIBRATO_RATES_HZ) - VIBRATO_RATES_HZ[0])
    at50 = np.mean(d[(kind == "sweep") & (np.abs(cents) == 50)])
    return dict(vib_rate_rho=spearmanr(dv, shift).statistic, vib_vs_50c=float(np.mean(dv[1:]) / at50))


def _relative_l2(pred, target):
    return jnp.sqrt(jnp.sum(jnp.square(pred - target), -1) + 1e-12) / jnp.sqrt(jnp.sum(jnp.square(target), -1) + 1e-12)


def make_distances(pcfg: P.PerceptualConfig, fcfg: F.FeatureConfig):
    """jitted (variants audio (V, n), base audio (n,), weights) -> dict of (V,) distances."""

    @jax.jit
    def distances(audio, base, weights):
        frames = C.frames_16k(C.resample_to_16k(jnp.concatenate([base[None], audio]), pcfg.sample_rate),
                              pcfg.hop_16k)
        frame_db = 10.0 * jnp.log10(jnp.mean(jnp.square(frames), axis=-1) + 1e-12)
        layers = C.crepe_layers(C.normalize_frames(frames), weights)
        acts = jax.nn.sigmoid(C.crepe_logits(layers[-1], weights))
        feats = P.PerceptualFeatures(layers[0][:1, :, 0, 0], acts, frame_db)
        base_p = jax.tree.map(lambda x: x[0], feats)
        mask = P.audible(base_p, pcfg)
        out = {}
        for i, layer in enumerate(layers, start=1):
            emb = layer.reshape(*layer.shape[:2], -1)
            b, v = emb[0], emb[1:]
            out[f"L{i}_framewise"] = jnp.sum(_relative_l2(v, b[None]) * mask, -1) / jnp.sum(mask)
            mean = lambda e: jnp.sum(e * mask[:, None], -2) / jnp.sum(mask)
            out[f"L{i}_framemean"] = _relative_l2(mean(v), mean(b)[None])
        var_p = P.PerceptualFeatures(jnp.zeros((audio.shape[0], 1)), acts[1:], frame_db[1:])
        base_pb = jax.tree.map(lambda x: jnp.broadcast_to(x, (audio.shape[0],) + x.shape), base_p)
        out["pitch_w1_cents"] = P.pitch_posterior_distance(var_p, base_pb, pcfg)
        base_f = F.analyze(base, fcfg)
        terms = L.matching_loss(F.analyze(audio, fcfg), jax.tree.map(
            lambda x: jnp.broadcast_to(x, (audio.shape[0],) + x.shape), base_f))
        out["mrstft"], out["d3_total"] = terms.mrstft, terms.total
        return out

    return distances


def scores(d: np.ndarray, kind: np.ndarray, cents: np.ndarray, sigma: np.ndarray) -> dict:
    """Per-base scores of one distance (see the module docstring)."""
    sw = kind == "sweep"
    rho_pitch = spearmanr(d[sw], np.abs(cents[sw])).statistic
    steps = []
    for side in (-1, 1):
        sel = sw & ((np.sign(cents) == side) | (cents == 0))
        order = np.argsort(np.abs(cents[sel]))
        steps.extend(np.diff(d[sel][order]) > 0)
    mx = kind == "mixed"
    rho_mixed = spearmanr(d[mx], np.abs(cents[mx])).statistic
    tb = (kind == "timbre") | (sw & (cents == 0))
    rho_timbre = spearmanr(d[tb], sigma[tb]).statistic
    return dict(rho_pitch=rho_pitch, mono=float(np.mean(steps)), rho_pitch_mixed=rho_mixed, rho_timbre=rho_timbre)


def sweep_curve(d: np.ndarray, kind: np.ndarray, cents: np.ndarray) -> np.ndarray:
    """Sweep distance at each |c| of SWEEP_CENTS (mean of the two signs) over that at 100 cents:
    shows which detunes a distance resolves and whether it keeps growing up to the octave."""
    sw = kind == "sweep"
    at = np.array([np.mean(d[sw & (np.abs(cents) == c)]) for c in SWEEP_CENTS])
    return at / at[SWEEP_CENTS.index(100)]


def layer_macs(model: str) -> list[int]:
    """Cumulative multiply-accumulates per frame of blocks 1..L."""
    chans, widths = (1, *C.CHANNELS[model]), (256, 128, 64, 32, 16, 8)
    per = [widths[i] * chans[i + 1] * chans[i] * (512 if i == 0 else 64) for i in range(6)]
    return list(np.cumsum(per).astype(int))


def time_layers(pcfg: P.PerceptualConfig, weights, audio: jax.Array, repeats: int = 3) -> list[float]:
    """Measured jitted forward time per clip up to each block (best of ``repeats``)."""
    out = []
    for layer in range(1, C.NUM_LAYERS + 1):
        f = jax.jit(lambda a, w, layer=layer: C.crepe_embedding(a, pcfg.sample_rate, pcfg.model, layer,
                                                                pcfg.hop_16k, w))
        f(audio, weights).block_until_ready()
        best = np.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            f(audio, weights).block_until_ready()
            best = min(best, time.perf_counter() - t0)
        out.append(best / audio.shape[0])
    return out


def choose(summary: dict[str, dict]) -> str:
    """The selection rule of the module docstring over the embedding candidates."""
    cands = [k for k in summary if k.startswith("L")]
    top = max(summary[k]["rho_pitch_mixed"][0] for k in cands)
    near = [k for k in cands if summary[k]["rho_pitch_mixed"][0] >= top - 0.02]
    return sorted(near, key=lambda k: (-summary[k]["mono"][0], summary[k]["cost_ms_per_clip"]))[0]


def run(cfg: StudyConfig) -> dict:
    from agents import curriculum as CU  # noqa: PLC0415
    scfg = SynthConfig(duration_s=cfg.duration_s)
    fcfg = F.FeatureConfig(duration_s=cfg.duration_s)
    pcfg = P.PerceptualConfig(model=cfg.model, hop_16k=cfg.hop_16k)
    weights = C.load_weights(cfg.model)
    rng = np.random.default_rng(cfg.seed)
    idx = timbre_indices(cfg.stage)
    pool = CU.heldout_presets(cfg.seed, cfg.stage, 4 * cfg.bases).copy()
    for name in _PITCH_PARAMS:  # osc1 at the played note: the note sets the pitch
        j = PR.NAMES.index(name)
        pool[:, j] = PR.DEFAULT_PARAMS01[j]
    notes = rng.uniform(cfg.note_lo, cfg.note_hi, pool.shape[0]).astype(np.float32)
    key = jax.random.PRNGKey(7)
    pool_audio = render_batch(jnp.asarray(pool), jax.random.split(key, pool.shape[0]), scfg, note=notes)
    pool_p = P.target_features(pool_audio, pcfg)
    voiced_frac = np.asarray(jnp.sum(P.voiced(pool_p, pcfg), -1) / pool_p.frame_db.shape[-1])
    keep = np.flatnonzero(voiced_frac >= cfg.min_voiced_fraction)[:cfg.bases]
    emit(dict(part="bases", pool=int(pool.shape[0]), voiced=int((voiced_frac >= cfg.min_voiced_fraction).sum()),
              kept=int(keep.size), notes=notes[keep].round(1).tolist()), cfg)
    distances = make_distances(pcfg, fcfg)
    per_metric: dict[str, list[dict]] = {}
    per_curve: dict[str, list[np.ndarray]] = {}
    per_vib: dict[str, list[dict]] = {}
    t0 = time.perf_counter()
    for bi in keep:
        x, nts, kind, cents, sigma = variants(pool[bi], float(notes[bi]), rng, cfg, idx)
        audio = render_batch(jnp.asarray(x), jax.random.split(key, x.shape[0]), scfg, note=nts)
        d = jax.device_get(distances(audio, pool_audio[bi], weights))
        for name, values in d.items():
            per_metric.setdefault(name, []).append(scores(np.asarray(values, np.float64), kind, cents, sigma))
            per_curve.setdefault(name, []).append(sweep_curve(np.asarray(values, np.float64), kind, cents))
        if cfg.vibrato:
            xv = vibrato_set(pool[bi])
            av = render_batch(jnp.asarray(xv), jax.random.split(key, xv.shape[0]), scfg,
                              note=np.full(xv.shape[0], notes[bi], np.float32))
            dv = jax.device_get(distances(av, av[0], weights))
            for name, values in dv.items():
                per_vib.setdefault(name, []).append(vibrato_scores(np.asarray(values, np.float64),
                                                                   np.asarray(d[name], np.float64), kind, cents))
    study_s = time.perf_counter() - t0
    cost = time_layers(pcfg, weights, pool_audio[:16])
    macs = layer_macs(cfg.model)
    summary = {}
    for name, rows in per_metric.items():
        rec = {}
        for s in ("rho_pitch", "mono", "rho_pitch_mixed", "rho_timbre"):
            v = np.array([r[s] for r in rows], np.float64)
            rec[s] = [float(np.nanmedian(v)), *[float(q) for q in np.nanpercentile(v, [25, 75])]]
        if name.startswith("L"):
            layer = int(name[1])
            rec["cost_ms_per_clip"] = cost[layer - 1] * 1e3
            rec["mmac_per_frame"] = macs[layer - 1] / 1e6
            rec["dim_per_frame"] = int(np.prod([128 >> (layer - 1), C.CHANNELS[cfg.model][layer - 1]]))
        summary[name] = rec
        emit(dict(part="score", metric=name, model=cfg.model, hop_16k=cfg.hop_16k, bases=int(keep.size),
                  **rec), cfg)
    for name, curves in per_curve.items():
        emit(dict(part="curve", metric=name, abs_cents=list(SWEEP_CENTS),
                  median_ratio_to_100c=np.round(np.nanmedian(np.stack(curves), 0), 3).tolist()), cfg)
    for name, rows in per_vib.items():
        rec = {k: [float(np.nanmedian(v)), *[float(q) for q in np.nanpercentile(v, [25, 75])]]
               for k, v in ((k, np.array([r[k] for r in rows], np.float64)) for k in rows[0])}
        emit(dict(part="vibrato", metric=name, rates_hz=list(VIBRATO_RATES_HZ), depth_st=VIBRATO_DEPTH_ST, **rec), cfg)
    best = choose(summary)
    emit(dict(part="choice", best=best, rule="max median rho_pitch_mixed; ties (0.02) by mono, then cost",
              study_s=study_s), cfg)
    print_table(summary, best)
    return summary


def print_table(summary: dict, best: str) -> None:
    print("\n| distance | rho_pitch | mono | rho_pitch_mixed | rho_timbre | ms/clip | MMAC/frame |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    fmt = lambda v: f"{v[0]:.2f} [{v[1]:.2f}, {v[2]:.2f}]"
    for name, r in summary.items():
        mark = " **(chosen)**" if name == best else ""
        cost = f"{r['cost_ms_per_clip']:.1f} | {r['mmac_per_frame']:.1f}" if "cost_ms_per_clip" in r else "| "
        print(f"| {name}{mark} | {fmt(r['rho_pitch'])} | {fmt(r['mono'])} | {fmt(r['rho_pitch_mixed'])} | "
              f"{fmt(r['rho_timbre'])} | {cost} |")


def parse_args(argv=None) -> StudyConfig:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bases", type=int, default=8)
    ap.add_argument("--stage", type=int, default=1)
    ap.add_argument("--model", default="tiny", choices=C.MODELS)
    ap.add_argument("--hop-16k", type=int, default=400)
    ap.add_argument("--duration-s", type=float, default=0.5)
    ap.add_argument("--mixed-sigma", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vibrato", action="store_true",
                    help="also score sensitivity to the vibrato rate at equal depth (frame-wise vs frame-mean)")
    ap.add_argument("--out", default=None, help="append JSON lines here")
    a = ap.parse_args(argv)
    if a.bases < 2:
        ap.error("--bases must be >= 2 (scores are medians over bases)")
    return StudyConfig(bases=a.bases, stage=a.stage, model=a.model, hop_16k=a.hop_16k, duration_s=a.duration_s,
                       mixed_sigma=a.mixed_sigma, seed=a.seed, vibrato=a.vibrato, out=a.out)


def main(argv=None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
