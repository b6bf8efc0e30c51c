"""``python -m agents.amortized_train --out RUN_DIR [--steps N --batch-size B ...]``: train the
amortized first-guess network (``agents.sac.amortized``) on fresh synthetic pairs and save it
to RUN_DIR (``amortized.msgpack`` + ``amortized.json``). The defaults train at the evaluation
harness's setting (0.5 s clips, 64 mel bands, note 60) in minutes on a 2-core CPU; on a GPU
raise ``--steps`` and ``--batch-size``. Use the run with ``python -m agents.evaluate
--amortized RUN_DIR`` or ``python -m agents.match FILE --method amortized --policy RUN_DIR``."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from jaxsynth.io import OutputPathError, check_output_dir


def build_parser() -> argparse.ArgumentParser:
    from agents.sac.amortized import DISCRETE_HEADS, LR_SCHEDULES, AmortizedConfig  # noqa: PLC0415 (jax import after parsing --help)

    d = AmortizedConfig()
    p = argparse.ArgumentParser(prog="python -m agents.amortized_train", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="run directory to write the network to")
    for f in dataclasses.fields(AmortizedConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(d, f.name)
        if isinstance(default, tuple):
            p.add_argument(flag, type=int, nargs="+", default=list(default))
        elif f.name == "encoder_init":
            p.add_argument(flag, choices=("scratch", "pca"), default=default)
        elif f.name == "lr_schedule":
            p.add_argument(flag, choices=LR_SCHEDULES, default=default)
        elif f.name == "discrete_head":
            p.add_argument(flag, choices=DISCRETE_HEADS, default=default)
        else:
            p.add_argument(flag, type=type(default), default=default)
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    from agents.sac.amortized import AmortizedConfig, train_run  # noqa: PLC0415

    try:
        check_output_dir(a.out)
        cfg = AmortizedConfig(**{f.name: tuple(getattr(a, f.name)) if isinstance(getattr(a, f.name), list)
                                 else getattr(a, f.name) for f in dataclasses.fields(AmortizedConfig)})
    except (ValueError, OutputPathError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    loaded, history = train_run(cfg, a.out)
    last = history[-1]
    print(f"trained on {loaded.summary['pairs']} fresh pairs in {loaded.summary['seconds']} s; held-out guess "
          f"loss median {last['guess_loss_median']:.3f}, param error {last['param_error']:.3f}; wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
