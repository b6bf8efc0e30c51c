"""agents/env/fresh_targets.py and curriculum.fresh_training_presets: the fresh-target stream
of training never yields a held-out preset, and a fresh bank is rendered like the fixed one."""

import jax
import jax.numpy as jnp
import numpy as np

from agents import curriculum as C
from agents import env as E
from agents.env.fresh_targets import fresh_bank


def test_fresh_stream_never_yields_a_heldout_preset():
    """100 episodes x 1,024 envs per stage from the jitted stream: every draw lies in the
    training half of the partition, is distinct from every held-out preset of the harness and
    training seeds, and unlocked modules vary while locked ones hold the defaults. Bin edges,
    where float32 rounding used to push a training draw into a held-out bin, are checked too."""
    draw = jax.jit(lambda k, s: jax.vmap(lambda kk: C.fresh_training_presets(kk, s, 1024))(
        jax.random.split(k, 100)))
    heldout = {s: np.concatenate([C.heldout_presets(seed, s, n) for seed in (0, 1234) for n in (8, 32)])
               for s in range(C.N_STAGES)}
    for stage in range(C.N_STAGES):
        x = np.asarray(draw(jax.random.key(stage), jnp.int32(stage))).reshape(-1, C.P.N_PARAMS)
        assert not C.is_heldout(x).any()
        assert C.is_heldout(heldout[stage]).all()
        # no draw equals a held-out preset in all its values: rows compared as float64 bytes,
        # all finite and -0.0 folded into 0.0 so that equal values have equal bytes (a set
        # lookup instead of the 102,400 x 80 x 33 difference array, ~1 GB per stage)
        assert np.isfinite(x).all()
        held = {r.tobytes() for r in heldout[stage].astype(np.float64) + 0.0}
        assert not any(r.tobytes() in held for r in x.astype(np.float64) + 0.0)
        locked = ~np.asarray(C.P.param_mask(C.stage_module_masks()[stage]))
        np.testing.assert_array_equal(x[:, locked], np.broadcast_to(C.P.DEFAULT_PARAMS01[locked], x[:, locked].shape))
    edges = jnp.asarray(np.nextafter(np.float32(np.arange(1, 513) / 512), 0, dtype=np.float32))
    assert not np.any(np.asarray(jnp.floor(C._into_half(edges, 0) * C.PARTITION_BINS)).astype(int) % 2)


def test_fresh_bank_matches_the_fixed_bank_render():
    """A fresh bank's targets, start losses and observation log-mels equal what the fixed bank
    builder computes for the same presets (same render key), and episodes reset from it."""
    cfg = E.small_config(bank_size=4)
    key = jax.random.key(0)
    bank = E.build_bank(key, cfg)
    fb = jax.jit(lambda k: fresh_bank(k, jnp.int32(1), 6, cfg, bank))(jax.random.key(5))
    assert fb.paired and fb.n_stages == 1 and fb.bank_size == 6
    ref = E.build_bank(key, cfg, targets=np.broadcast_to(np.asarray(fb.params01[0]), (C.N_STAGES, 6, 33)))
    np.testing.assert_allclose(np.asarray(fb.log_mel[0]), np.asarray(ref.log_mel[1]), atol=1e-3)
    np.testing.assert_allclose(np.asarray(fb.start_loss[0, :, 0]), np.asarray(ref.start_loss[1, 0]),
                               rtol=1e-4, atol=1e-4)
    env = E.SynthMatchEnv(cfg)
    p = env.make_params(bank, stage=1).replace(bank=fb)
    _, st = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(jax.random.key(1), 8), p)
    np.testing.assert_allclose(np.asarray(st.loss), np.asarray(fb.start_loss[0, st.target_index, 0]))
