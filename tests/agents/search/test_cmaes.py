"""CMA-ES (agents/search/cmaes.py): recovery of stage-0 targets, and CMA-ES vs random search at
equal budget. (Its trajectories as SAC teacher data: tests/agents/sac/test_teacher.py.)

The matching tests use 0.25 s clips and 8 targets x a population of 10 (stage 0 has 9 free
parameters: CMA-ES's default population 4 + floor(3 ln 9) = 10), so the render + loss graph is
compiled once for them (and shared with tests/agents/search/test_matchers.py and
tests/agents/evaluation/).
"""

import jax
import numpy as np
import pytest

from agents import curriculum as C
from agents.search.cmaes import cmaes_match
from agents.search.common import MatchConfig, target_features_of_params
from agents.search.random_search import random_search
from jaxsynth import params as P
from jaxsynth.synth import SynthConfig

CFG = MatchConfig(synth=SynthConfig(duration_s=0.25))
STAGE0 = C.stage_module_masks()[0]
HELDOUT = C.heldout_presets(0, 0, 8)


def test_cmaes_recovers_stage0_targets_for_several_seeds():
    # Two held-out stage-0 presets (9 free parameters), each matched by 4 independent CMA-ES
    # runs (each target copy gets its own key, i.e. its own seed), 1024 renders per run.
    # Measured (2026-11-25, keys 0 and 1, 16 runs): median 0.04-0.15, worst 0.49 (a run stuck
    # in a filter-type/cutoff local minimum; CMA-ES has no restarts here); on another x86-64 CPU
    # (2026-12-02, key 0) one of the 8 runs stopped at 0.752, the next worst 0.44: which run
    # gets stuck depends on float rounding, so the bound is on the count, not on every run.
    # Tolerance: at least 6 of the 8 runs below 0.75 (under the stage-0 promotion threshold
    # 1.0, i.e. solved by the curriculum's criterion) and the median below 0.25. A random
    # preset scores ~2-3 on these targets, so a broken search fails both.
    x = HELDOUT[[1, 1, 1, 1, 6, 6, 6, 6]]
    res = cmaes_match(jax.random.key(0), target_features_of_params(x, CFG), STAGE0, 1024, CFG)
    loss = np.asarray(res.best_loss)
    assert np.sum(loss < 0.75) >= 6, loss
    assert np.median(loss) < 0.25, loss
    assert int(res.trace_renders[-1]) <= 1024
    # best-so-far trace is monotone and ends at the reported best
    tl = np.asarray(res.trace_loss)
    assert np.all(np.diff(tl, axis=1) <= 0)
    np.testing.assert_array_equal(tl[:, -1], loss)
    # locked modules stay at their defaults; discrete parameters are on their grid
    locked = ~np.asarray(P.param_mask(STAGE0))
    bp = np.asarray(res.best_params01)
    np.testing.assert_array_equal(bp[:, locked], np.broadcast_to(P.DEFAULT_PARAMS01[locked], bp[:, locked].shape))
    np.testing.assert_array_equal(bp, np.asarray(P.snap(bp)))


def test_cmaes_beats_random_search_at_equal_budget(match_config):
    # 512 renders per target, 3 seeds x 8 held-out stage-0 presets (each seed its own targets
    # and key): 24 paired matches. Per target, CMA-ES either solves it (~0.02-0.7) or stalls in a
    # local minimum (~2-3.5, no restarts), so the median of one seed's 8 targets jumps: seed 0
    # alone gives CMA-ES 1.71 vs random 1.85 (this CPU, 2026-12-01). The paired geometric mean
    # of loss(CMA-ES) / loss(random) is steady: per-target log ratio mean -0.57, sd 0.77 (240
    # matches, seeds 0-29); over 24 matches, 0.49-0.70 for each of the 10 seed triples tried
    # (seeds 3b..3b+2, b = 0..9; benchmarks/RESULTS.md, "CMA-ES vs random search in the tests").
    # Bound 0.85 (log -0.16): 2.6 standard errors (0.77 / sqrt(24)) above the measured mean,
    # while a CMA-ES no better than random search (a broken tell, a sign error in the fitness)
    # sits at ~1.
    log_ratio = []
    for seed in (0, 1, 2):
        tf = target_features_of_params(C.heldout_presets(seed, 0, 8), match_config)
        key = jax.random.key(seed)
        cma = np.asarray(cmaes_match(key, tf, STAGE0, 512, match_config).best_loss)
        rnd = np.asarray(random_search(key, tf, STAGE0, 512, match_config).best_loss)
        log_ratio.append(np.log(cma / rnd))
    ratio = float(np.exp(np.mean(log_ratio)))
    assert ratio < 0.85, (ratio, np.round(np.exp(log_ratio), 2))
