"""A CI-sized SAC run (fresh targets + the ground-truth teacher) beats its untrained policy on
the held-out presets, for each of 10 seeds trained at once (``--seeds 10``, one compile)."""

import numpy as np

from agents.sac.config import RunOptions, TrainConfig
from agents.sac.run import run

SEEDS = 10
# Held-out median best-in-episode loss, stage 0, 8 held-out presets, untrained ~8.0. Measured
# (benchmarks/RESULTS.md, "SAC training", CI-sized learning check): every seed of 10 falls by
# more than MARGIN; the margin is about half the smallest drop measured.
MARGIN = 1.0


def test_ci_sized_training_beats_the_untrained_policy(tmp_path):
    cfg = TrainConfig(envs=32, seeds=SEEDS, seed=0, total_steps=16, chunk_steps=8, max_steps=8,
                      fresh_targets=True,
                      updates_per_step=8, batch_size=64, hidden=(64, 64), n_heldout=8, bank_size=4,
                      max_delta=0.25, teacher_weight=1.0, shard=False)
    s = run(cfg, RunOptions(out=str(tmp_path), progress=False, media=False, tensorboard=False,
                            save_buffer=False), log=lambda *a: None)
    before = np.asarray(s["heldout_median_loss_untrained"])
    after = np.asarray(s["heldout_median_loss"][-1])
    print("untrained", np.round(before, 3).tolist(), "trained", np.round(after, 3).tolist())
    assert before.shape == after.shape == (SEEDS,)
    assert np.all(after < before - MARGIN), (before, after)
