"""agents/rendering.py, the one render -> analyse path: its three forms agree, and the render
key conventions. Runs on the tiny env configuration of tests/conftest.py (0.1 s, 16 mels)."""

import jax
import jax.numpy as jnp
import numpy as np

from agents import curriculum as C
from agents import rendering as R
from jaxsynth import params as P


def _presets(n, seed=9):
    return np.asarray(C.training_presets(jax.random.key(seed), 1, n))


def test_render_key_is_the_render_stream_of_the_seed():
    k = R.render_key(7)
    want = jax.random.fold_in(jax.random.key(7), R.RENDER_STREAM)
    np.testing.assert_array_equal(jax.random.key_data(k), jax.random.key_data(want))
    # an int seed and its PRNG key give the same render key; other seeds give other keys
    np.testing.assert_array_equal(jax.random.key_data(R.render_key(jax.random.key(7))),
                                  jax.random.key_data(k))
    assert not np.array_equal(jax.random.key_data(R.render_key(8)), jax.random.key_data(k))
    assert R.RENDER_STREAM == 3  # the stream every matcher and the env render with


# Two compiled programs (a batch of 1 vs a batch of N, or a differently wrapped batch) render the
# same sound to within the synth's batch-invariance bound, derived and measured in
# tests/jaxsynth/test_synth.py::test_a_sound_alone_equals_it_inside_a_batch: differently
# vectorized float32 loops, amplified by resonant filters and drive, stay below 5e-4 (-66 dB);
# a wrong key, note or row would be O(0.01-1). The same program on the same input is bit-exact.
AUDIO_ATOL = 5e-4


def test_batch_equals_single_and_chunked(tiny_env_config):
    cfg = tiny_env_config
    x = _presets(4)
    key = R.render_key(0)
    args = (key, cfg.synth, cfg.features, cfg.note, cfg.velocity)
    audio, feats = R.render_analyze_jit(jnp.asarray(x), *args)
    assert audio.shape == (4, cfg.synth.num_samples)
    assert feats.log_mel.shape[0] == 4 and np.all(np.isfinite(np.asarray(feats.log_mel)))
    for i in (0, 3):
        a1, _ = R.render_analyze_jit(jnp.asarray(x[i:i + 1]), *args)
        np.testing.assert_allclose(np.asarray(a1[0]), np.asarray(audio[i]), rtol=0, atol=AUDIO_ATOL)
    # chunked host path (3 = 2 + 1 padded with the last preset): exactly the batch-2 program's
    # output for each chunk, padding dropped
    a_c, f_c = R.render_analyze_chunked(x[:3], *args, chunk=2)
    assert isinstance(a_c, np.ndarray) and a_c.shape == (3, cfg.synth.num_samples)
    parts = [R.render_analyze_jit(jnp.asarray(x[i]), *args) for i in ([0, 1], [2, 2])]
    np.testing.assert_array_equal(a_c, np.concatenate([np.asarray(p[0]) for p in parts])[:3])
    np.testing.assert_array_equal(f_c.log_mel, np.concatenate([np.asarray(p[1].log_mel) for p in parts])[:3])


def test_env_render_features_under_vmap_equals_render_analyze(tiny_env_config):
    cfg = tiny_env_config
    fn = R.env_render_features(cfg.synth, cfg.features, cfg.note, cfg.velocity, return_audio=True)
    assert R.env_render_features(cfg.synth, cfg.features, cfg.note, cfg.velocity, return_audio=True) is fn
    x = _presets(4, seed=4)
    key = R.render_key(1)
    # vmap over seeds of vmap over envs: the custom rule flattens both axes into one batch
    # (the batch-4 and batch-1 render_analyze programs are the ones the test above compiled)
    feats, audio = jax.jit(jax.vmap(jax.vmap(fn, in_axes=(0, None)), in_axes=(0, None)))(
        jnp.asarray(x).reshape(2, 2, P.N_PARAMS), key)
    ref_audio, ref = R.render_analyze_jit(jnp.asarray(x), key, cfg.synth, cfg.features, cfg.note,
                                          cfg.velocity)
    assert feats.log_mel.shape == (2, 2) + ref.log_mel.shape[1:]
    assert audio.shape == (2, 2, cfg.synth.num_samples)
    np.testing.assert_allclose(np.asarray(audio).reshape(ref_audio.shape), np.asarray(ref_audio),
                               rtol=0, atol=AUDIO_ATOL)
    # each env got its own preset with the one render key: env (1, 1) is preset 3, alone
    one_audio, _ = R.render_analyze_jit(jnp.asarray(x[3:4]), key, cfg.synth, cfg.features, cfg.note,
                                        cfg.velocity)
    np.testing.assert_allclose(np.asarray(audio[1, 1]), np.asarray(one_audio[0]), rtol=0, atol=AUDIO_ATOL)
