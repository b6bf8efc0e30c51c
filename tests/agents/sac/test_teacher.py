"""Teacher data for SAC (agents/sac/teacher.py): CMA-ES best-so-far trajectories -> jump
actions -> environment transitions, saved and loaded, and replayed action by action in the env.

The replay runs in CI on the tiny env shared through tests/conftest.py (0.1 s clips, 16 mels);
the same check on ``small_config`` is marked slow.
"""

import jax
import numpy as np
import pytest

from agents.sac.teacher import cmaes_transitions, jump_actions, load_transitions, save_transitions
from jaxsynth import params as P


def test_jump_actions_reach_the_target_through_snapping():
    # a jump that changes the 3-way filter type by two choices and cutoff by 0.9 (> max_delta)
    from agents.env import default_max_delta
    a = np.asarray(P.DEFAULT_PARAMS01, np.float32).copy()
    b = a.copy()
    b[P.INDEX["filter.type"]] = 1.0
    b[P.INDEX["filter.cutoff_hz"]] = 0.05
    b[P.INDEX["amp_env.sustain"]] = 0.1
    md = default_max_delta()
    mods, deltas, n = jump_actions(np.stack([a, b]), 0, md, 50)
    assert n > 2 and np.all(np.abs(deltas) <= 1.0)
    # only the two changed modules, each action touching one module's parameters only
    assert set(mods[:n].tolist()) == {P.MODULES.index("filter"), P.MODULES.index("amp_env")}
    for m, d in zip(mods[:n], deltas[:n]):
        assert np.all(d[~P.MODULE_PARAMS[m]] == 0)
    from agents.env import Action, apply_action
    import jax.numpy as jnp
    cur = jnp.asarray(a)
    for m, d in zip(mods[:n], deltas[:n]):
        cur, _, ok = apply_action(cur, Action(jnp.int32(m), jnp.asarray(d)), jnp.int32(0), jnp.asarray(md))
        assert bool(ok)
    np.testing.assert_allclose(np.asarray(cur), b, atol=1e-6)


def _check_cma_transitions_replay(env, ep, tmp_path, n_targets, budget, top_k):
    """CMA-ES -> transitions -> .npz -> load, then replay every stored trajectory action by
    action in the real env (single jitted steps, not the batched scan that produced it): the
    same parameters before and after every step and the same rewards."""
    from agents.env import Action
    import jax.numpy as jnp
    tr, info = cmaes_transitions(jax.random.key(1), env, ep, np.arange(n_targets), budget, top_k=top_k)
    path = tmp_path / "cma.npz"
    save_transitions(path, tr, info)
    tr2, extras = load_transitions(path)
    for a, b in zip(jax.tree.leaves(tr), jax.tree.leaves(tr2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    traj, step = extras["trajectory"], extras["step"]
    assert len(set(traj.tolist())) == top_k and tr2.reward.shape == traj.shape
    assert np.all(np.abs(np.asarray(tr2.delta)) <= 1.0)
    assert np.asarray(tr2.obs.stage).max() == 0
    step_fn = jax.jit(env.step)
    ended_on_best = 0
    for k in range(top_k):
        rows = np.nonzero(traj == k)[0]
        assert len(rows) > 0 and np.array_equal(step[rows], np.arange(len(rows)))
        _, state = env.reset_to(jnp.int32(info["target"][k]), jnp.int32(0), ep)
        rewards = []
        for r in rows:
            # exact: the same clip/snap arithmetic on the same float32 values
            np.testing.assert_array_equal(np.asarray(state.params01), np.asarray(tr2.obs.params01[r]))
            _, state, reward, term, trunc, inf = step_fn(
                jax.random.key(0), state, Action(tr2.module[r], tr2.delta[r]), ep)
            np.testing.assert_array_equal(np.asarray(inf["next_params01"]), np.asarray(tr2.next_obs.params01[r]))
            rewards.append(float(reward))
            assert bool(trunc) == bool(tr2.truncated[r]) and bool(term) == bool(tr2.terminated[r])
        # rewards: same graph, but scan-of-vmap vs a single jitted step are two compiled programs
        # that may sum in another order. A reward is a difference of matching losses (O(1-10)),
        # each a mean over up to N ~ 7e3 spectrogram bins (the 1024-point MR-STFT resolution of
        # a 0.15 s clip): reordering a float32 sum moves it by ~ sqrt(N) * 2^-24 ~ 5e-6 of its
        # value, i.e. up to ~5e-5 per loss at 10. atol 1e-4 covers two losses; the rewards that
        # matter differ by > 1e-2 (measured: 2.5e-5 on an AMD EPYC, 0 on an Intel Xeon).
        np.testing.assert_allclose(rewards, np.asarray(tr2.reward[rows]), rtol=1e-5, atol=1e-4)
        # a trajectory that fits in the episode ends exactly on the CMA-ES best preset
        if len(rows) < env.config.max_steps:
            ended_on_best += 1
            np.testing.assert_allclose(np.asarray(tr2.next_obs.params01[rows[-1]]),
                                       info["cma_best_params01"][k], atol=1e-6)
    return tr2, ended_on_best


def test_cma_transitions_replay_in_tiny_env(tiny_env, tmp_path):
    # The teacher-data promise on the cheapest env (0.1 s, 16 mels, 4 targets, 24-step
    # episodes): replaying the stored actions reproduces the recorded parameters and rewards.
    # Measured 29 s at load 5 (12-step episodes), 98 s at load 7 on the 2-core CPU; mostly
    # compiling the env step twice (scan + single step).
    env, ep = tiny_env
    tr, ended_on_best = _check_cma_transitions_replay(env, ep, tmp_path, 4, 40, 2)
    # the recorded rewards are not all zero (the trajectories improve on the start preset)
    assert np.any(np.abs(np.asarray(tr.reward)) > 1e-3)
    assert ended_on_best >= 1  # at least one plan fits in the episode and lands on the CMA best


@pytest.mark.slow  # the same check on small_config (0.15 s, 32 mels): ~5 min on a loaded 2-core CPU
def test_cma_transitions_replay_in_env(tmp_path):
    from agents.env import SynthMatchEnv, small_config
    env = SynthMatchEnv(small_config(max_steps=12))
    _check_cma_transitions_replay(env, env.default_params(jax.random.key(0)), tmp_path, 4, 40, 2)


def test_load_transitions_rejects_other_files(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, a=np.zeros(3))
    with pytest.raises(ValueError, match="not a jaxsynth CMA transitions file"):
        load_transitions(p)
    q = tmp_path / "y.npz"
    q.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable transitions file"):
        load_transitions(q)
