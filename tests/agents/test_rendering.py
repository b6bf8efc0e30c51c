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


def test_env_render_loss_in_chunks_equals_the_loss_of_the_whole_batch(tiny_env_config, monkeypatch):
    # The env's fused path: the render, then a loop over chunks of batch_chunk clips that
    # analyses each chunk and scores it against targets gathered from the table per chunk. 6
    # envs in chunks of 4 (the last chunk padded with silence and dropped) vs render_analyze of
    # the same 6 presets in one pass and matching_loss against the gathered targets. Same audio
    # program; the analysis is compiled for 4 clips vs 6 (differently vectorized float32 FFTs
    # and reductions), so features and loss terms agree to float32 rounding amplified by the
    # logs: the bounds of tests/jaxsynth/test_features.py::test_chunked_analysis_equals_one_pass
    # (rtol 1e-4, atol 1e-3 dB on features; loss terms are means of such values).
    import dataclasses

    from jaxsynth.losses import LossWeights, matching_loss
    cfg = tiny_env_config
    feat_cfg = dataclasses.replace(cfg.features, batch_chunk=4)
    weights = LossWeights(log_mel_l1=0.5)
    fn = R.env_render_loss(cfg.synth, feat_cfg, cfg.note, cfg.velocity, weights)
    assert R.env_render_loss(cfg.synth, feat_cfg, cfg.note, cfg.velocity, weights) is fn
    x = _presets(6, seed=5)
    key = R.render_key(2)
    _, table = R.render_analyze_jit(jnp.asarray(_presets(3, seed=6)), key, cfg.synth, cfg.features,
                                    cfg.note, cfg.velocity)
    index = jnp.asarray([2, 0, 1, 1, 2, 0], jnp.int32)
    feats, terms = jax.jit(jax.vmap(fn, in_axes=(0, None, None, 0)))(jnp.asarray(x), key, table, index)
    _, ref = R.render_analyze_jit(jnp.asarray(x), key, cfg.synth,
                                  dataclasses.replace(feat_cfg, batch_chunk=None), cfg.note, cfg.velocity)
    ref_terms = matching_loss(ref, jax.tree.map(lambda t: t[index], table), weights)
    assert feats.mrstft_mag == ()
    for name in ("log_mel", "mfcc", "centroid_hz", "loudness_lufs", "gain_db", "peak", "dc_offset",
                 "clip_fraction"):
        np.testing.assert_allclose(getattr(feats, name), getattr(ref, name), rtol=1e-4, atol=1e-3,
                                   err_msg=name)
    for got, want, name in zip(terms, ref_terms, terms._fields):
        assert got.shape == (6,)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=name)
    # a wrong target per env would change the loss by O(1): every env is scored against its own
    other = matching_loss(ref, jax.tree.map(lambda t: t[(index + 1) % 3], table), weights).total
    assert np.all(np.abs(np.asarray(other) - np.asarray(terms.total)) > 1e-2)
    # vmap over seeds of vmap over envs flattens both axes into one batch, as for
    # env_render_features; one table per seed (a vmap over banks) gathers each env's target
    nested = jax.jit(jax.vmap(jax.vmap(fn, in_axes=(0, None, None, 0)), in_axes=(0, None, None, 0)))
    _, t_nested = nested(jnp.asarray(x).reshape(2, 3, -1), key, table, index.reshape(2, 3))
    # two compiled programs (the nested vmap adds reshapes around the same batch, which may fuse
    # differently on another CPU): the bounds above, not bit equality
    np.testing.assert_allclose(np.asarray(t_nested.total).reshape(6), np.asarray(terms.total),
                               rtol=1e-4, atol=1e-5)
    tables = jax.tree.map(lambda t: jnp.stack([t, t[::-1]]), table)  # bank 1 lists targets reversed
    per_bank = jax.jit(jax.vmap(jax.vmap(fn, in_axes=(0, None, None, 0)), in_axes=(0, None, 0, 0)))
    _, t_banks = per_bank(jnp.asarray(x).reshape(2, 3, -1), key, tables,
                          jnp.stack([index[:3], 2 - index[3:]]))
    np.testing.assert_allclose(np.asarray(t_banks.total).reshape(6), np.asarray(terms.total),
                               rtol=1e-4, atol=1e-5)
    # On a CPU a batch larger than synth.CPU_BATCH_CHUNK is rendered chunk by chunk (ordered by
    # voice count) and each chunk's clips are analysed and scored before the next chunk is
    # rendered (synth.render_batch_map): with render chunks of 3 and analysis chunks of 2, the
    # same terms as the unfused path that renders the same chunks into one audio array first
    # (same bounds: the same render ops, an analysis compiled for 2 clips vs 6).
    from jaxsynth import synth as S
    jaxpr_of = lambda f: str(jax.make_jaxpr(jax.vmap(f, in_axes=(0, None, None, 0)))(
        jnp.asarray(x), key, table, index))
    one_pass_jaxpr = jaxpr_of(fn)
    monkeypatch.setattr(S, "CPU_BATCH_CHUNK", 4)
    fn2 = R.env_render_loss(cfg.synth, dataclasses.replace(feat_cfg, batch_chunk=2), cfg.note,
                            cfg.velocity, weights)
    feats2, terms2 = jax.jit(jax.vmap(fn2, in_axes=(0, None, None, 0)))(jnp.asarray(x), key, table,
                                                                         index)
    audio2, ref2 = jax.jit(lambda p: R.render_analyze(p, key, cfg.synth, dataclasses.replace(
        feat_cfg, batch_chunk=None), cfg.note, cfg.velocity))(jnp.asarray(x))
    ref_terms2 = matching_loss(ref2, jax.tree.map(lambda t: t[index], table), weights)
    np.testing.assert_allclose(feats2.log_mel, ref2.log_mel, rtol=1e-4, atol=1e-3)
    for got, want, name in zip(terms2, ref_terms2, terms2._fields):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=name)
    # the chunked render was taken: its voice-count order is an argsort, absent from one pass
    assert "argsort" in jaxpr_of(fn2) and "argsort" not in one_pass_jaxpr
