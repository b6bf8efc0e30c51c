"""agents/sac_train.py + synth adapter: short learning run on stage 0, resume after a kill,
checkpoint errors, CLI flags; agents/logging_utils.py media retention bound."""

from pathlib import Path

import jax
import numpy as np
import pytest

from agents import sac_train
from agents.sac import checkpoint as ckpt
from agents.sac import run as sac_run
from agents.sac.config import RunOptions, TrainConfig
from agents.sac.logs import FILES_PER_ITEM, INDEX, MediaStore, ScalarLogger

OPTS = dict(progress=False, media=False, tensorboard=False)


@pytest.fixture(scope="module")
def setup(short_run_setup):
    return short_run_setup


@pytest.fixture(scope="module")
def full_run(short_run):
    """The session's short run (tests/conftest.py), shared with test_policy.py."""
    return short_run


def test_short_training_improves_heldout_median_loss(full_run):
    summary, out = full_run
    before = summary["heldout_median_loss_untrained"][0]
    after = summary["heldout_median_loss"][-1][0]
    # Median over held-out targets of the episode's best loss. Measured at this config (max_delta
    # 0.1) and seed 0: untrained 8.06, after 8 env steps 5.08 (ratio 0.63); seeds 1 and 2 give
    # ratios 0.84 and 0.82, so 0.9 holds with margin. The final-episode loss is not asserted:
    # seed 0 has 8.08 -> 5.36, but seeds 1 and 2 end at 1.06x and 0.95x their untrained final.
    assert after < 0.9 * before, (before, summary["heldout_median_loss"])
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert any('"reward/improvement"' in l for l in lines) and any('"heldout_median_loss"' in l for l in lines)


def test_resume_after_kill_matches_uninterrupted_run(short_run_config, setup, full_run, tmp_path):
    cfg = short_run_config
    half = TrainConfig(**{**cfg.__dict__, "total_steps": cfg.chunk_steps})
    sac_run.run(half, RunOptions(out=str(tmp_path), **OPTS), log=lambda *a: None, setup=setup)  # "killed" here
    resumed = sac_run.run(cfg, RunOptions(out=str(tmp_path), resume=True, **OPTS), log=lambda *a: None, setup=setup)
    full = full_run[0]
    for a, b in zip(jax.tree.leaves(full["runner"].sac), jax.tree.leaves(resumed["runner"].sac)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert resumed["heldout_median_loss"] == full["heldout_median_loss"][1:]


def test_existing_checkpoint_is_never_overwritten_and_corrupt_one_is_reported(short_run_config, full_run,
                                                                              tmp_path):
    cfg = short_run_config
    out = full_run[1]
    ck = out / "checkpoints"
    before = sorted(p.name for p in ck.iterdir())
    with pytest.raises(ckpt.CheckpointError, match="--resume"):
        sac_run.run(cfg, RunOptions(out=str(out), **OPTS), log=lambda *a: None)
    assert sorted(p.name for p in ck.iterdir()) == before
    other = TrainConfig(**{**cfg.__dict__, "encoder": "cnn"})
    with pytest.raises(ckpt.CheckpointError, match="encoder"):
        sac_run.run(other, RunOptions(out=str(out), resume=True, **OPTS), log=lambda *a: None)
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint"):
        sac_run.run(cfg, RunOptions(out=str(tmp_path / "empty"), resume=True, **OPTS), log=lambda *a: None)
    # Corrupt copy: truncate every data file of the newest checkpoint.
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    step = ckpt.latest_step(bad / "checkpoints")
    for f in (bad / "checkpoints" / str(step) / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"garbage")
    with pytest.raises(ckpt.CheckpointError, match="corrupt|unreadable|restored"):
        ckpt.restore(bad / "checkpoints", full_run[0]["runner"], cfg.fingerprint())


def test_media_retention_bounds_files(tmp_path):
    store = MediaStore(tmp_path, top_k=2)
    rng = np.random.default_rng(0)

    def writer(d, stem):
        paths = [d / f"{stem}_{j}.txt" for j in range(FILES_PER_ITEM)]
        for p in paths:
            p.write_text("x")
        return paths

    losses = {}
    for i in range(40):
        for stage in (0, 1):
            for kind in ("best", "worst"):
                loss = float(rng.uniform())
                losses.setdefault((stage, kind), []).append(loss)
                store.add(stage, kind, loss, f"c{i}", writer)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != INDEX]
    assert len(files) == 2 * 2 * 2 * FILES_PER_ITEM
    kept_best = sorted(it.loss for it in store.items[(0, "best")])
    assert kept_best == sorted(losses[(0, "best")])[:2]
    kept_worst = sorted(it.loss for it in store.items[(1, "worst")])
    assert kept_worst == sorted(losses[(1, "worst")])[-2:]


def test_scalar_logger_writes_jsonl_and_tensorboard(tmp_path):
    lg = ScalarLogger(tmp_path)
    lg.log(3, {"a": np.float32(1.5), "b": np.nan, "vec": np.zeros(3)})
    lg.close()
    import json
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert row == {"kind": "train", "step": 3, "a": 1.5, "b": None}
    assert any((tmp_path / "tb").iterdir())


@pytest.mark.parametrize("argv,msg", [
    (["--envs", "0"], "--envs"), (["--total-steps", "5", "--chunk-steps", "2"], "multiple"),
    (["--encoder", "rnn"], "invalid choice"), (["--stage", "9"], "--stage"),
    (["--bc-steps", "10"], "--cmaes-targets"), (["--resume"], "--resume needs --out"),
    (["--max-delta", "0"], "--max-delta")])
def test_cli_rejects_bad_flags(argv, msg, capsys):
    with pytest.raises(SystemExit):
        sac_train.parse_args(argv)
    assert msg in capsys.readouterr().err


def test_cli_help_and_defaults():
    help_text = sac_train.build_parser().format_help()
    for flag in ("--envs", "--seeds", "--total-steps", "--stage", "--encoder", "--seed", "--out", "--resume",
                 "--chunk-steps", "--no-progress", "--cmaes-targets", "--bc-steps", "--max-delta"):
        assert flag in help_text
    cfg, opts = sac_train.parse_args(["--envs", "4096"])
    assert cfg.envs == 4096 and cfg.n_chunks >= 1 and opts.progress


def test_cli_default_out_is_a_new_directory_per_run():
    """Repeating the README's command must not collide with the previous run's checkpoint."""
    _, opts = sac_train.parse_args([])
    assert Path(opts.out).parent == Path(RunOptions.out) and Path(opts.out).name[:8].isdigit()
    _, opts = sac_train.parse_args(["--out", "somewhere", "--resume"])
    assert opts.out == "somewhere" and opts.resume
