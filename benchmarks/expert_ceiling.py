"""What a perfect imitation of the ground-truth teacher reaches: the teacher itself
(``agents.env.expert.expert_action``) acting in the env on the held-out presets of every
stage, from the default start, per edit scale and episode length. A pilot for the curriculum
thresholds and the episode shape: a stage threshold below what the teacher reaches in the
episode's edits can never promote.

    python benchmarks/expert_ceiling.py [--max-delta 0.1 0.25] [--n-heldout 32]

Prints, per edit scale and stage, the median held-out start loss, the median best-in-episode
loss after 4 / 8 / 16 / 32 edits and the median symmetry-aware parameter error (L1) at the
start and after 32 edits (TrainConfig's default small analysis: 0.15 s, 32 mels).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from agents import curriculum as C
from agents import env as E
from agents.env.expert import expert_action, parameter_error
from agents.sac.config import TrainConfig

EDITS = (4, 8, 16, 32)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-delta", type=float, nargs="+", default=[0.1, 0.25])
    ap.add_argument("--n-heldout", type=int, default=32)
    ap.add_argument("--heldout-seed", type=int, default=1234)
    a = ap.parse_args(argv)
    n, steps = a.n_heldout, max(EDITS)
    cfg = TrainConfig(max_steps=steps, chunk_steps=steps, total_steps=steps)
    env = E.SynthMatchEnv(cfg.env_config())
    hb = E.build_heldout_bank(jax.random.key(0), env.config, a.heldout_seed, n)
    perr = jax.vmap(parameter_error, in_axes=(0, 0, None))
    for md in a.max_delta:
        p = env.make_params(hb, max_delta=E.default_max_delta(md))
        for stage in range(C.N_STAGES):
            ps = E.with_stage(p, stage)
            _, st = jax.vmap(env.reset_to, in_axes=(0, 0, None))(jnp.arange(n), jnp.zeros(n, jnp.int32), ps)
            target = hb.params01[stage]

            @jax.jit
            def rollout(st, ps=ps, target=target):
                def body(st, k):
                    m, d = jax.vmap(expert_action, in_axes=(0, 0, None, None))(st.params01, target, ps.stage, ps.max_delta)
                    _, st2, _, _, _, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                        jax.random.split(k, n), st, E.Action(m, d), ps)
                    return st2, (info["loss"], perr(info["next_params01"], target, ps.stage))
                return jax.lax.scan(body, st, jax.random.split(jax.random.key(0), steps))[1]

            losses, errs = rollout(st)
            l0 = np.asarray(st.loss)
            best = np.minimum.accumulate(np.concatenate([l0[None], np.asarray(losses)]), axis=0)
            e0 = np.median(np.asarray(perr(st.params01, target, stage)))
            print(f"max_delta {md} stage {stage}: start {np.median(l0):.2f}; teacher best-in-episode "
                  + ", ".join(f"{k} edits {np.median(best[k]):.2f}" for k in EDITS)
                  + f"; parameter error {e0:.2f} -> {np.median(np.asarray(errs[-1])):.3f}", flush=True)


if __name__ == "__main__":
    main()
