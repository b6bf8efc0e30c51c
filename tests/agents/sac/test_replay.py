"""agents/replay.py: ring buffer semantics, compact log-mel storage, the Transition layout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.sac import replay
from jaxsynth import params as P


def _items(values):
    return {"x": jnp.asarray(values, jnp.float32), "i": jnp.asarray(values, jnp.int32)}


def test_ring_buffer_wraps_and_overwrites_oldest():
    buf = replay.init({"x": jnp.zeros(()), "i": jnp.zeros((), jnp.int32)}, 5)
    buf = replay.add(buf, _items([1, 2, 3]))
    assert int(buf.size) == 3 and int(buf.insert_pos) == 3
    buf = replay.add(buf, _items([4, 5, 6, 7]))
    assert int(buf.size) == 5 and int(buf.insert_pos) == 2
    # Slots 0,1 were overwritten by 6,7; the oldest (1,2) are gone.
    np.testing.assert_array_equal(np.asarray(buf.data["i"]), [6, 7, 3, 4, 5])


def test_sample_draws_only_from_filled_part():
    buf = replay.init({"x": jnp.zeros(()), "i": jnp.zeros((), jnp.int32)}, 100)
    buf = replay.add(buf, _items([10, 11, 12]))
    s = replay.sample(buf, jax.random.PRNGKey(0), 1000)
    assert set(np.asarray(s["i"]).tolist()) == {10, 11, 12}


def test_batch_larger_than_capacity_is_rejected():
    buf = replay.init({"x": jnp.zeros(())}, 2)
    with pytest.raises(ValueError, match="capacity"):
        replay.add(buf, {"x": jnp.zeros(3)})
    with pytest.raises(ValueError, match="capacity"):
        replay.init({"x": jnp.zeros(())}, 0)


def test_transition_stores_target_index_not_spectrogram_and_bytes():
    frames, n_mels = 44, 64
    ex = replay.example_synth_transition(frames, n_mels, "float16")
    big = [x for x in jax.tree.leaves(ex) if np.size(x) >= frames * n_mels]
    assert len(big) == 2  # current and next log-mel; no target spectrogram
    assert all(x.dtype == jnp.float16 for x in big)
    expected = 2 * (frames * n_mels * 2 + P.N_PARAMS * 4 + 4 + 4) + 4 + P.N_PARAMS * 4 + 4 + 1 + 1
    assert replay.bytes_per_item(ex) == expected == 11_686
    assert replay.bytes_per_item(replay.example_synth_transition(frames, n_mels, "float32")) == \
        expected + 2 * frames * n_mels * 2


@pytest.mark.parametrize("dtype,max_err_db", [("float16", 0.0161), ("bfloat16", 0.126)])
def test_compact_log_mel_rounding_error(dtype, max_err_db):
    """Half-ulp bounds at |x| < 64 dB: float16 2^-11 * 32 = 0.0156, bfloat16 2^-8 * 32 = 0.125."""
    x = np.linspace(-63.9, 40.0, 100_001).astype(np.float32)
    tr = replay.synth_transition(x.reshape(-1, 1), np.zeros((x.size, P.N_PARAMS)), np.zeros(x.size),
                                 0, np.zeros(x.size), np.zeros((x.size, P.N_PARAMS)), np.zeros(x.size),
                                 np.zeros(x.size, bool), np.zeros(x.size, bool), x.reshape(-1, 1),
                                 np.zeros((x.size, P.N_PARAMS)), dtype)
    err = np.abs(np.asarray(tr.obs.log_mel, np.float32)[:, 0] - x)
    assert err.max() <= max_err_db
    assert tr.obs.stage.shape == (x.size,)  # scalar stage broadcast per transition


def test_buffer_add_sample_jit_and_vmap_over_seeds():
    ex = {"x": jnp.zeros((3,))}
    bufs = jax.vmap(lambda _: replay.init(ex, 8))(jnp.arange(2))
    batch = {"x": jnp.arange(2 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 3)}
    bufs = jax.jit(jax.vmap(replay.add))(bufs, batch)
    np.testing.assert_array_equal(np.asarray(bufs.size), [4, 4])
    np.testing.assert_array_equal(np.asarray(bufs.data["x"][1, :4]), np.asarray(batch["x"][1]))
