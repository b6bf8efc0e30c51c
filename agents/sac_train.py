"""Train the hybrid SAC sound-matching agent: ``python -m agents.sac_train --envs 4096``.

The run is a sequence of compiled chunks (Brax style): each chunk is ONE jitted ``lax.scan``
of ``--chunk-steps`` env steps of all envs (each followed by ``--updates-per-step`` SAC
updates) ending with a held-out evaluation and the curriculum's promotion rule. Between chunks this
thin host loop updates the progress bar, writes TensorBoard/JSONL logs and media, and saves an
orbax checkpoint. ``--seeds N`` trains N independent seeds at once (``jax.vmap``); envs are
sharded over all local devices (``jax.sharding``).

Multi-host (GPU/TPU pods): start one process per host with the same flags and call
``jax.distributed.initialize()`` first (``--distributed``); ``jax.devices()`` then spans every
host, the env axis is sharded over all of them by XLA's SPMD partitioner, and only process 0
writes logs and checkpoints.

The defaults are sized for a 2-core CPU (a few minutes including compilation, with visible
learning at ``--envs 4096``): short 0.15 s clips with 32 mel bands (``env.small_config``),
few env steps and many updates per step. For real runs on a GPU raise ``--total-steps``,
``--duration`` (0.5 s is the full analysis), ``--bank-size`` and ``--batch-size``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import typing
from pathlib import Path

import jax
import numpy as np

from agents.sac import checkpoint as ckpt
from agents.sac.config import RunOptions, TrainConfig
from agents.sac import distributed as dist
from jaxsynth.io import OutputPathError


def _add_fields(group, cls, parser_defaults: dict) -> None:
    """One flag per field of the dataclass ``cls``, from the field's ``cli`` metadata
    (``agents.sac.config.cli``): ``--field-name`` (or its ``flag``), typed by the annotation;
    a boolean becomes a switch that flips its default. A field without metadata is an error,
    so a new field cannot be left out of the CLI."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if "cli" not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name} has no CLI metadata: declare it with "
                            "field(default=..., metadata=cli('help text')) in agents/sac/config.py")
        kw = dict(f.metadata["cli"])
        flag = kw.pop("flag") or "--" + f.name.replace("_", "-")
        default = kw.pop("default", f.default)
        kw.setdefault("metavar", flag.lstrip("-").replace("-", "_").upper())
        parser_defaults[f.name] = default
        kind = hints[f.name]
        if kind is bool:
            kw.pop("metavar")
            group.add_argument(flag, dest=f.name, action="store_false" if default else "store_true",
                               default=argparse.SUPPRESS, **kw)
        elif typing.get_origin(kind) is tuple:
            (item, _) = typing.get_args(kind)
            group.add_argument(flag, dest=f.name, type=item, nargs="+", default=list(default), **kw)
        else:
            args = [a for a in typing.get_args(kind) if a is not type(None)]
            group.add_argument(flag, dest=f.name, type=args[0] if args else kind, default=default, **kw)


def _values(ns: argparse.Namespace, cls, parser_defaults: dict) -> dict:
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        v = getattr(ns, f.name, parser_defaults[f.name])
        out[f.name] = tuple(v) if typing.get_origin(hints[f.name]) is tuple else v
    return out


_DEFAULTS: dict[str, dict] = {}


def build_parser() -> argparse.ArgumentParser:
    """The parser, generated from the fields of ``TrainConfig`` and ``RunOptions``."""
    p = argparse.ArgumentParser(
        prog="python -m agents.sac_train",
        description="Train the hybrid SAC sound-matching agent (PureJaxRL-style compiled chunks). "
                    "Defaults finish in a few minutes on a 2-core CPU; scale up by flags on a GPU.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _DEFAULTS["train"], _DEFAULTS["run"] = {}, {}
    _add_fields(p.add_argument_group("training (TrainConfig: fixes the numbers)"), TrainConfig,
                _DEFAULTS["train"])
    _add_fields(p.add_argument_group("run (RunOptions: output, resume, logging)"), RunOptions,
                _DEFAULTS["run"])
    return p


def parse_args(argv=None) -> tuple[TrainConfig, RunOptions]:
    p = build_parser()
    ns = p.parse_args(argv)
    run_kw = _values(ns, RunOptions, _DEFAULTS["run"])
    try:
        cfg = TrainConfig(**_values(ns, TrainConfig, _DEFAULTS["train"]))
        cfg.sac_config()  # validates the SAC settings
        if run_kw["checkpoint_every"] < 1 or run_kw["media_top_k"] < 1:
            raise ValueError("--checkpoint-every and --media-top-k must be >= 1")
    except ValueError as e:
        p.error(str(e))
    if run_kw["resume_from"] is not None:
        run_kw["resume"] = True
    if run_kw["out"] is None:
        if run_kw["resume"]:
            p.error("--resume needs --out DIR: the directory of the run to continue")
        run_kw["out"] = str(Path(RunOptions.out) / time.strftime("%Y%m%d-%H%M%S", time.gmtime()))
    return cfg, RunOptions(**run_kw)


def main(argv=None) -> int:
    cfg, opts = parse_args(argv)
    # Persistent XLA cache: a second run with the same shapes skips most compilation. JAX's own
    # variables (JAX_COMPILATION_CACHE_DIR, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS) win.
    jax.config.update("jax_compilation_cache_dir", os.environ.get("JAX_COMPILATION_CACHE_DIR")
                      or str(Path.home() / ".cache" / "jaxsynth" / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", 1.0)))
    try:
        if opts.distributed:  # before anything touches a device (evosax does at import)
            dist.initialize(opts.coordinator_address, opts.num_processes, opts.process_id)
        from agents.sac.run import run  # noqa: PLC0415
        summary = run(cfg, opts)
    except (ckpt.CheckpointError, OutputPathError, dist.DistributedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    med = summary["heldout_median_loss"]
    def seed_mean(per_seed) -> float:  # None: no untrained evaluation (a resumed run)
        return round(float(np.mean(per_seed)), 4) if per_seed is not None else float("nan")

    print(f"held-out median loss per chunk (seed mean): best-in-episode {[seed_mean(m) for m in med]}, "
          f"final {[seed_mean(m) for m in summary['heldout_median_final_loss']]} (untrained: best "
          f"{seed_mean(summary['heldout_median_loss_untrained'])}, final "
          f"{seed_mean(summary['heldout_median_final_loss_untrained'])}); stage {summary['stage'][-1]}; "
          f"{summary['total_seconds_incl_compile']:.1f} s incl. compile; logs in {opts.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
