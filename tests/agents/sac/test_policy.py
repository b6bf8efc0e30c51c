"""agents/policy.py: a trained sac_train run loaded as a harness matcher. A checkpoint in
sac_train's layout is written in-test (module fixture; a real tiny training run is the slow
test); the loaded actor must act exactly like the in-memory runner's actor on
the env's own observation, the policy matcher must never edit locked modules and be
deterministic per seed, the match CLI must work with --method sac, and every broken run
directory must give a clear error with nothing written."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import curriculum as C
from agents import env as E
from agents.evaluation.registry import policy_matcher
from agents.sac import checkpoint as ckpt
from agents.sac import networks as nets
from agents.sac import trainer as sac
from agents.sac.config import TrainConfig
from agents.sac.losses import init_sac_state
from agents.search.common import MatchConfig, render_params
from agents.sac.policy import (PolicyLoadError, SACPolicy, actions, env_log_mel_of_params,
                           load_policy)
from agents.sac.synth_adapter import net_input
from jaxsynth import params as P
from jaxsynth.io import save_audio
from jaxsynth.synth import SynthConfig

CFG = TrainConfig(envs=8, seeds=2, total_steps=2, chunk_steps=2, updates_per_step=2, batch_size=16,
                    bank_size=4, n_heldout=4, max_steps=3, duration_s=0.1, hidden=(32, 32),
                    buffer_capacity=64)
MCFG = MatchConfig(synth=SynthConfig(duration_s=0.25))


def _save_run(out, sac_state, chunk=1):
    """A checkpoint exactly as ``sac_train.run`` writes it without the buffer (same ``Runner``
    tree, same metadata), built without compiling a training chunk (``test_real_training_run_loads`` loads the
    session's real short run)."""
    runner = sac.Runner(sac_state, None, None, None, jnp.zeros((CFG.seeds,), jnp.int32),
                        jnp.zeros((CFG.seeds,), jnp.int32), jax.random.split(jax.random.PRNGKey(0), CFG.seeds))
    meta = {"config": CFG.fingerprint(), "chunk": chunk, "has_buffer": False, "stage": [0] * CFG.seeds}
    ckpt.save(out / "checkpoints", chunk, runner, meta)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(env, env params, SACState of CFG.seeds seeds, run dir): networks initialised by the
    trainer's own ``init_sac_state`` on the env's own observation of the run's bank."""
    out = tmp_path_factory.mktemp("run")
    env = E.SynthMatchEnv(CFG.env_config())
    ep = env.make_params(E.build_bank(jax.random.key(CFG.seed), env.config), stage=CFG.stage,
                         max_delta=CFG.max_delta01())  # as sac_train.Setup builds them
    actor = nets.Actor(P.N_MODULES, P.N_PARAMS, CFG.encoder, CFG.hidden)
    critic = nets.TwinCritic(P.N_MODULES, CFG.encoder, CFG.hidden)
    obs, _ = env.reset_to(0, 0, ep)
    one = net_input(obs)
    keys = jax.random.split(jax.random.PRNGKey(3), CFG.seeds)
    state = jax.vmap(lambda k: init_sac_state(k, CFG.sac_config(), actor, critic, *one))(keys)
    _save_run(out, state)
    return env, ep, state, out


@pytest.fixture(scope="module")
def pol(trained):
    return load_policy(trained[3])


def test_loaded_actor_acts_like_the_runner_on_the_env_observation(trained, pol):
    env, ep, state, out = trained
    assert pol.config == TrainConfig(**{**CFG.__dict__, "total_steps": CFG.chunk_steps})
    assert pol.chunk == 1 and pol.env_config == CFG.env_config()
    for s in range(CFG.seeds):  # every seed of a --seeds N run, seed 0 by default
        p = pol if s == 0 else load_policy(out, seed_index=s)
        for a, b in zip(jax.tree.leaves(p.actor_params), jax.tree.leaves(state.actor)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b)[s])
    with pytest.raises(PolicyLoadError, match="seed_index 2 out of range"):
        load_policy(out, seed_index=2)
    # the observation rebuilt without the bank equals the env's (same render key and analysis)
    bank = ep.bank
    n = bank.bank_size
    np.testing.assert_allclose(np.asarray(env_log_mel_of_params(bank.params01[0], pol)),
                               np.asarray(bank.log_mel[0]), atol=1e-3)
    start = jnp.broadcast_to(bank.start_params01[0, 0], (n, P.N_PARAMS))
    cur = env_log_mel_of_params(start, pol)
    np.testing.assert_allclose(np.asarray(cur[0]), np.asarray(bank.start_log_mel[0, 0]), atol=1e-3)
    # greedy action and edit equal the trainer's greedy policy on the env's observation + env edit
    params0 = jax.tree.map(lambda x: x[0], state.actor)
    greedy = sac.greedy_policy(pol.actor, params0)
    obs = jax.vmap(lambda i: env.get_obs(env.reset_to(i, 0, ep)[1], ep))(jnp.arange(n))
    module, delta = greedy(*net_input(obs))
    want = jax.vmap(lambda p, m, d: E.apply_action(p, E.Action(m, d), ep.stage, ep.max_delta)[0])(
        obs.params01, module, delta)
    mask = C.stage_module_masks()[0]
    nxt, m2, d2 = actions(pol, jax.random.key(1), obs.params01, cur, bank.log_mel[0], mask, "greedy")
    np.testing.assert_array_equal(np.asarray(m2), np.asarray(module))
    np.testing.assert_allclose(np.asarray(d2), np.asarray(delta), atol=1e-5)
    np.testing.assert_allclose(np.asarray(nxt), np.asarray(want), atol=1e-6)
    assert np.any(np.asarray(nxt) != np.asarray(obs.params01))  # the policy edits something


def test_real_training_run_loads(short_run):
    """The checkpoint a real training run wrote loads as a policy: the session's short run
    (tests/conftest.py, shared with test_run.py), seed axis included."""
    summary, out = short_run
    pol = load_policy(out, seed_index=0)
    for a, b in zip(jax.tree.leaves(pol.actor_params), jax.tree.leaves(summary["runner"].sac.actor)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b)[0])


def test_policy_matcher_respects_locks_and_is_deterministic_per_seed(pol):
    x = C.heldout_presets(0, 0, 4)
    audio, tf = render_params(x, MCFG)
    mask = C.stage_module_masks()[0]
    m = policy_matcher(SACPolicy(pol, "sample"))
    run = lambda k: m(jax.random.key(k), tf, mask, 9, MCFG, target_audio=audio)
    a, b, c = run(0), run(0), run(1)
    locked = ~np.asarray(P.param_mask(mask), bool)
    assert locked.any() and (~locked).any()
    tp = np.asarray(a.trace_params01)
    np.testing.assert_array_equal(tp[..., locked], np.broadcast_to(P.DEFAULT_PARAMS01[locked], tp[..., locked].shape))
    assert a.trace_renders.tolist() == list(range(1, 10))
    np.testing.assert_array_equal(np.asarray(a.trace_params01), np.asarray(b.trace_params01))
    np.testing.assert_array_equal(np.asarray(a.best_loss), np.asarray(b.best_loss))
    assert not np.array_equal(np.asarray(a.trace_params01), np.asarray(c.trace_params01))
    assert np.all(np.diff(np.asarray(a.trace_loss), axis=1) <= 0)
    # the best loss is the harness loss of the best preset (re-rendered)
    from jaxsynth.losses import matching_loss
    _, f = render_params(a.best_params01, MCFG)
    np.testing.assert_allclose(np.asarray(matching_loss(f, tf).total), np.asarray(a.best_loss), rtol=1e-4)
    with pytest.raises(ValueError, match="target audio"):
        m(jax.random.key(0), tf, mask, 4, MCFG)


def test_match_cli_with_sac_policy(trained, tmp_path, capsys):
    from agents.match import main
    x = C.heldout_presets(0, 0, 2)[1]
    audio, _ = render_params(x[None], MCFG)
    wav = tmp_path / "target.wav"
    save_audio(wav, np.asarray(audio[0]), MCFG.synth.sample_rate)
    out = tmp_path / "out"
    base = [str(wav), "--budget", "8", "--stage", "0", "--duration-s", "0.25", "--out", str(out)]
    assert main(base + ["--method", "sac"]) == 2  # no --policy
    assert "--policy RUN_DIR" in capsys.readouterr().err and not out.exists()
    assert main(base + ["--method", "sac", "--policy", str(trained[3])]) == 0
    assert sorted(os.listdir(out)) == ["ab.png", "match.json", "match.wav", "preset.json"]
    summary = json.load(open(out / "match.json"))
    # pitch-first (the default): 4 policy renders, then the pitch and level check (the match, its
    # two in-tune copies, the corrected preset: 4 renders), whose preset is the result
    assert summary["method"] == "sac" and summary["trace_renders"] == [1, 2, 3, 4, 8]
    assert summary["loss_terms"]["total"] == summary["trace_loss"][-1]


def test_broken_run_directories_give_clear_errors(trained, tmp_path, capsys):
    from agents.match import main
    with pytest.raises(PolicyLoadError, match="does not exist.*sac_train"):
        load_policy(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PolicyLoadError, match="holds no checkpoint"):
        load_policy(tmp_path / "empty")
    # config written by other code: an unknown field in the metadata
    other = tmp_path / "other"
    shutil.copytree(trained[3] / "checkpoints", other / "checkpoints")
    step = max(int(d) for d in os.listdir(other / "checkpoints") if d.isdigit())
    meta_file = other / "checkpoints" / str(step) / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    meta["config"]["new_knob"] = 1
    meta_file.write_text(json.dumps(meta))
    (other / "checkpoints" / str(step) / ckpt.INTEGRITY_FILE).unlink()  # other code, no record
    with pytest.raises(PolicyLoadError, match="another version.*new_knob"):
        load_policy(other)
    # corrupt array data
    bad = tmp_path / "bad"
    shutil.copytree(trained[3] / "checkpoints", bad / "checkpoints")
    for root, _, files in os.walk(bad / "checkpoints" / str(step) / "state"):
        for f in files:
            if "/d" in root.replace(os.sep, "/"):
                (open(os.path.join(root, f), "wb")).write(b"garbage")
    with pytest.raises(PolicyLoadError, match="corrupt"):
        load_policy(bad)
    # the CLI: non-zero exit, the error on stderr, nothing written
    wav = tmp_path / "t.wav"
    save_audio(wav, np.zeros(MCFG.synth.num_samples, np.float32) + 0.1, MCFG.synth.sample_rate)
    out = tmp_path / "out"
    assert main([str(wav), "--method", "sac", "--policy", str(bad), "--duration-s", "0.25",
                 "--out", str(out)]) == 2
    assert "corrupt" in capsys.readouterr().err and not out.exists()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".out.")]
