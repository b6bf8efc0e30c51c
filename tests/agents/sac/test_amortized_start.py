"""SAC trained from the amortized guess (``--amortized RUN``): every episode, training and
held-out, starts from the network's guess of its target; the run carries a copy of the network;
the run's learned matcher ("sac") starts from the same guess (its first charged render) and
then edits; a resumed run reads its own copy when the original is gone; bad combinations are
refused with a message that says what to pass."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import curriculum as C
from agents.sac import amortized as A
from agents.sac import run as sac_run
from agents.sac.config import RunOptions, TrainConfig
from jaxsynth import params as P

NET = A.AmortizedConfig(duration_s=0.1, batch_size=8, encoder_width=16, hidden=(32,), val_size=4,
                        steps=2, chunk_steps=1)
RUN = dict(envs=8, total_steps=4, chunk_steps=2, updates_per_step=2, batch_size=16, bank_size=4,
           n_heldout=4, max_steps=2, duration_s=0.1, hidden=(32,), buffer_capacity=64,
           fresh_targets=True)
QUIET = dict(progress=False, media=False, tensorboard=False)


@pytest.fixture(scope="module")
def net_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("amortized_net")
    frames = NET.input_dim // NET.features.n_mels
    params = NET.net().init(jax.random.key(3), jnp.zeros((1, frames, NET.features.n_mels)),
                            jnp.zeros((1, A.N_SCALARS)))
    A.save_amortized(d, params, NET, {"pairs": 0})
    return d


@pytest.fixture(scope="module")
def trained(net_dir, tmp_path_factory):
    cfg = TrainConfig(**RUN, amortized=str(net_dir))
    out = tmp_path_factory.mktemp("sac_from_guess")
    setup = sac_run.Setup(cfg)
    summary = sac_run.run(cfg, RunOptions(out=str(out), **QUIET), log=lambda *a: None, setup=setup)
    return cfg, setup, summary, out


def test_config_needs_fresh_targets():
    with pytest.raises(ValueError, match="--fresh-targets"):
        TrainConfig(**{**RUN, "fresh_targets": False}, amortized="somewhere")


def test_bad_network_is_one_error_line_before_any_work(tmp_path, capsys):
    from agents.sac_train import main
    out = tmp_path / "run"
    argv = ["--envs", "8", "--total-steps", "2", "--chunk-steps", "2", "--max-steps", "2",
            "--fresh-targets", "--amortized", str(tmp_path / "nope"), "--out", str(out), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--amortized" in err and "does not exist" in err and "amortized_train" in err
    assert not (out / "checkpoints").exists()


def test_heldout_episodes_start_from_the_guess(trained, net_dir):
    _, setup, summary, out = trained
    hb = setup.params.heldout
    assert hb.paired
    start = A.start_fn(A.load_amortized(net_dir))
    want = sac_run.guess_starts(start, np.asarray(hb.params01))
    np.testing.assert_array_equal(np.asarray(hb.start_params01), want)
    # the guesses differ per target (a paired bank, not one shared start) and locked modules
    # of each stage hold the defaults
    assert not np.array_equal(want[3, 0], want[3, 1])
    for s, mask in enumerate(C.stage_module_masks()):
        locked = ~np.asarray(P.param_mask(mask))
        np.testing.assert_array_equal(want[s][:, locked], np.broadcast_to(P.DEFAULT_PARAMS01[locked],
                                                                          (want.shape[1], locked.sum())))
    assert np.isfinite(summary["heldout_median_loss"]).all()


def test_run_carries_the_network_and_resumes_from_its_copy(trained, net_dir, tmp_path):
    cfg, _, _, out = trained
    copy = A.load_amortized(out / A.RUN_COPY)
    orig = A.load_amortized(net_dir)
    assert jax.tree.all(jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)),
                                     copy.net_params, orig.net_params))
    # the original network is moved away: a resume of a copy of the run reads the run's own copy
    run_copy = tmp_path / "run"
    shutil.copytree(out, run_copy)
    away = tmp_path / "away"
    shutil.move(net_dir, away)
    try:
        with pytest.raises(A.AmortizedLoadError, match="does not exist"):
            sac_run.Setup(cfg)
        summary = sac_run.run(cfg, RunOptions(out=str(run_copy), resume=True, **QUIET), log=lambda *a: None)
    finally:
        shutil.move(away, net_dir)
    assert summary["heldout_median_loss"] == []  # both chunks were done: restored, nothing retrained


def test_sac_matcher_starts_from_the_guess(trained):
    from agents.evaluation.registry import amortized_guess, build_matchers
    from agents.search.common import MatchConfig, render_features
    from jaxsynth.synth import SynthConfig

    _, _, _, out = trained
    matchers = build_matchers(str(out), pitch_first=False)
    cfg = MatchConfig(synth=SynthConfig(duration_s=NET.duration_s))
    x = C.heldout_presets(0, C.N_STAGES - 1, 3)
    audio, feats = jax.jit(render_features, static_argnums=1)(jnp.asarray(x), cfg)
    mask = C.stage_module_masks()[-1]
    res = matchers["sac"](jax.random.key(0), feats, mask, 5, cfg, target_audio=audio)
    guess = amortized_guess(A.load_amortized(out / A.RUN_COPY))(feats, audio, cfg, mask, P.DEFAULT_PARAMS01)
    np.testing.assert_array_equal(np.asarray(res.trace_params01[:, 0]), np.asarray(guess))
    assert list(res.trace_renders) == [1, 2, 3, 4, 5]
    assert (np.asarray(res.best_loss) <= np.asarray(res.trace_loss[:, 0])).all()
    # the guess alone is a row of the same run: the learned matcher never ends worse than it
    alone = matchers["amortized"](jax.random.key(0), feats, mask, 5, cfg, target_audio=audio)
    np.testing.assert_array_equal(np.asarray(alone.best_params01), np.asarray(guess))
    assert (np.asarray(res.best_loss) <= np.asarray(alone.best_loss)).all()
    # pitch-first (the default): the same start and edits, then the pitch and level check
    # (there, the guess is first transposed to the target's f0: registry.tune_to_f0)
    # (4 renders: the match, its two in-tune copies, the corrected preset; a pitched target keeps
    # the corrected preset even at a higher loss, so only the policy's part of the trace falls)
    checked = build_matchers(str(out))["sac"](jax.random.key(0), feats, mask, 8, cfg, target_audio=audio)
    assert list(checked.trace_renders) == [1, 2, 3, 4, 8]
    tuned = amortized_guess(A.load_amortized(out / A.RUN_COPY), True)(feats, audio, cfg, mask, P.DEFAULT_PARAMS01)
    np.testing.assert_array_equal(np.asarray(checked.trace_params01[:, 0]), np.asarray(tuned))
    assert checked.render_note is not None and np.all(np.diff(np.asarray(checked.trace_loss)[:, :-1], axis=1) <= 0)
    np.testing.assert_array_equal(np.asarray(checked.trace_loss)[:, -1], np.asarray(checked.best_loss))
