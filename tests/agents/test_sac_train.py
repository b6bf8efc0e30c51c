"""``python -m agents.sac_train`` (agents/sac_train.py): the parser is generated from the
fields of ``TrainConfig`` and ``RunOptions`` (their ``cli`` metadata) and keeps every flag of the
hand-written parser it replaced. Parser-only: nothing is trained here."""

import argparse
import dataclasses

import pytest

from agents import sac_train
from agents.sac.config import RunOptions, TrainConfig


# Every flag the hand-written parser had (and what it set), so generating the parser from
# TrainConfig / RunOptions keeps the command lines that worked before.
_OLD_FLAGS = {
    "--envs": ("envs", "8", 8), "--seeds": ("seeds", "2", 2), "--seed": ("seed", "3", 3),
    "--total-steps": ("total_steps", "16", 16), "--chunk-steps": ("chunk_steps", "8", 8),
    "--updates-per-step": ("updates_per_step", "2", 2), "--batch-size": ("batch_size", "32", 32),
    "--stage": ("stage", "1", 1), "--encoder": ("encoder", "cnn", "cnn"),
    "--duration": ("duration_s", "0.2", 0.2), "--max-steps": ("max_steps", "2", 2),
    "--bank-size": ("bank_size", "4", 4), "--heldout": ("n_heldout", "5", 5),
    "--gamma": ("gamma", "0.5", 0.5), "--tau": ("tau", "0.1", 0.1), "--lr": ("lr", "0.01", 0.01),
    "--init-alpha": ("init_alpha", "0.2", 0.2), "--lr-alpha": ("lr_alpha", "0.01", 0.01),
    "--target-entropy-c": ("target_entropy_c_per_dim", "-2", -2.0),
    "--target-entropy-d": ("target_entropy_d_ratio", "0.25", 0.25),
    "--best-bonus": ("best_bonus", "0", 0.0), "--max-delta": ("max_delta", "0.3", 0.3),
    "--buffer-capacity": ("buffer_capacity", "4096", 4096),
    "--log-mel-dtype": ("log_mel_dtype", "float32", "float32"),
    "--cmaes-targets": ("cmaes_targets", "2", 2), "--cmaes-budget": ("cmaes_budget", "8", 8),
}
_OLD_SWITCHES = {"--full-analysis": ("full_analysis", True), "--entropy-c-all-dims": ("entropy_c_per_module", False),
                 "--no-shard": ("shard", False)}
_OLD_RUN = {"--no-progress": ("progress", False), "--no-buffer-checkpoint": ("save_buffer", False),
            "--no-media": ("media", False), "--distributed": ("distributed", True)}


def test_cli_is_generated_from_every_config_field():
    base = ["--out", "o"]
    for flag, (name, text, want) in _OLD_FLAGS.items():
        extra = ["--total-steps", "16"] if flag == "--chunk-steps" else []
        cfg, _ = sac_train.parse_args(base + extra + [flag, text])
        assert getattr(cfg, name) == want, flag
    cfg, _ = sac_train.parse_args(base + ["--hidden", "16", "8"])
    assert cfg.hidden == (16, 8)
    cfg, _ = sac_train.parse_args(base + ["--cmaes-targets", "2", "--bc-steps", "3"])
    assert cfg.bc_steps == 3
    for flag, (name, want) in _OLD_SWITCHES.items():
        assert getattr(sac_train.parse_args(base + [flag])[0], name) is want, flag
        assert getattr(sac_train.parse_args(base)[0], name) is (not want), flag
    for flag, (name, want) in _OLD_RUN.items():
        assert getattr(sac_train.parse_args(base + [flag])[1], name) is want, flag
    _, opts = sac_train.parse_args(["--out", "o", "--resume-from", "4", "--checkpoint-every", "2",
                                    "--media-top-k", "5"])
    assert (opts.resume, opts.resume_from, opts.checkpoint_every, opts.media_top_k) == (True, 4, 2, 5)
    # no flags: exactly the dataclass defaults (the output folder aside)
    cfg, opts = sac_train.parse_args(["--out", "o"])
    assert cfg == TrainConfig() and opts == RunOptions(out="o")
    # every field has a flag with help text in --help
    help_text = sac_train.build_parser().format_help()
    for cls in (TrainConfig, RunOptions):
        for f in dataclasses.fields(cls):
            flag = f.metadata["cli"]["flag"] or "--" + f.name.replace("_", "-")
            assert flag in help_text and f.metadata["cli"]["help"], f.name

    # a field declared without CLI metadata is refused when the parser is built
    @dataclasses.dataclass(frozen=True)
    class Forgotten:
        new_knob: int = 3

    with pytest.raises(TypeError, match="new_knob"):
        sac_train._add_fields(argparse.ArgumentParser(), Forgotten, {})
