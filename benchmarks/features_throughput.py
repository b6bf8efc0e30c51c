"""Throughput of feature extraction + matching loss (the per-step cost of the env's reward).

Measures ``matching_loss(analyze(audio), cached_target_features)`` per batch of clips
(0.5 s at 22.05 kHz by default): compile time once per shape, then the median of ``--reps``
steady-state calls after a warm-up. Variants (the optimizations measured):

* ``bare-stft``: the yardstick: one ``n_fft``-point power STFT of the clips, nothing else;
* ``shared-fft``: ``features.analyze`` as shipped: one STFT per resolution, the
  n_fft=1024/hop=256 one shared by the loudness, log-mel, MFCC, centroid and the MR-STFT term,
  batches analysed in chunks of ``FeatureConfig.batch_chunk`` clips;
* ``one-pass``: the same in one pass over the whole batch (``batch_chunk=None``);
* ``shared-fir-kw``: loudness from the time-domain K-weighting filter (an FFT convolution of
  its own) instead of the shared STFT, the clip scaled before the STFTs;
* ``separate-fft``: the same features from separate calls (log-mel, centroid and the four
  MR-STFT resolutions each take their own STFT of the normalised clip). Inside one ``jit``,
  XLA's common-subexpression elimination merges the identical STFTs again, so this measures
  whether hand-sharing still matters under jit;
* ``scaled-powers``: STFTs of the raw clip with every power bin scaled by the normalising gain
  afterwards (the first version of ``analyze``) instead of scaling the clip before;
* ``shared-matmul``: ``analyze`` with ``FeatureConfig(dft="matmul")``, a precomputed windowed
  DFT matrix instead of ``jnp.fft.rfft``;
* ``shared-scan-kw``: ``analyze`` with ``FeatureConfig(k_weighting="scan")``: the K-weighting
  biquads run sample by sample in ``lax.scan`` instead of as an FFT convolution;
* ``loudness-fir`` / ``loudness-scan``: the BS.1770-4 loudness alone, with either filter;
* ``bf16-fft``: STFTs in float32 (XLA's FFT takes no bfloat16), everything after them -- power,
  magnitudes, mel, log, MFCC, centroid and the loss -- in bfloat16; loudness stays float32
  (its K-weighting is an FFT convolution too);
* ``bf16-matmul``: as ``bf16-fft`` but the STFT itself is a bfloat16 matmul DFT (frames and
  DFT matrices in bfloat16, float32 accumulation is XLA's choice): the form an accelerator's
  matrix units would run.

For the bfloat16 variants the script also reports their accuracy: the relative error of every
loss term against the float32 ``shared-fft`` loss on the same clips (median and max over the
batch). Rows are written as JSON with ``--json`` (``run_all.py`` reads it).

    python benchmarks/features_throughput.py                      # print a Markdown table
    python benchmarks/features_throughput.py --quick              # smoke run (batch 1, 16)
    python benchmarks/features_throughput.py --write-results      # also write RESULTS.md
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import (RESULTS_MD, compile_jit, load_avg, metadata, metadata_lines,  # noqa: E402
                               time_calls, write_json, write_sections)
from jaxsynth import features as F  # noqa: E402
from jaxsynth import losses as L  # noqa: E402

SECTION = "## Features and losses"
VARIANTS = ("bare-stft", "shared-fft", "one-pass", "shared-fir-kw", "separate-fft", "scaled-powers", "shared-scan-kw",
            "shared-matmul",
            "bf16-fft", "bf16-matmul", "loudness-fir", "loudness-scan")
BF16 = ("bf16-fft", "bf16-matmul")


def analyze_separate(audio, cfg: F.FeatureConfig) -> F.Features:
    """``analyze`` without STFT sharing: every consumer takes its own STFT."""
    loud = F.loudness_lufs(audio, cfg.sample_rate, cfg.loudness_floor_lufs)
    gain_db = F.loudness_gain_db(loud, cfg)
    x = audio * (10.0 ** (gain_db / 20.0))[..., None]
    mel_db = F.log_mel(x, cfg)
    power = F.stft_power(x, cfg.n_fft, cfg.hop_length, cfg.pad_mode, cfg.dft)
    return F.Features(
        log_mel=mel_db,
        mfcc=F.mfcc_from_log_mel(mel_db, cfg.n_mfcc),
        centroid_hz=F.spectral_centroid_hz(x, cfg),
        frame_energy=jnp.sum(power, axis=-1),
        mrstft_mag=tuple(F.magnitude(F.stft_power(x, n, h, cfg.pad_mode, cfg.dft), cfg.mag_eps)
                         for n, h in cfg.mrstft_resolutions),
        loudness_lufs=loud, gain_db=gain_db,
        peak=jnp.max(jnp.abs(audio), axis=-1), dc_offset=jnp.mean(audio, axis=-1),
        clip_fraction=jnp.mean((jnp.abs(audio) >= cfg.clip_level).astype(audio.dtype), axis=-1))


def analyze_scaled_powers(audio, cfg: F.FeatureConfig) -> F.Features:
    """``analyze`` as first written: STFTs of the raw clip, then every power bin scaled by the
    normalising gain (same result as scaling the clip first)."""
    feats = F.analyze(audio, cfg)  # for the non-spectral fields only
    power_gain = (10.0 ** (feats.gain_db / 10.0))[..., None, None]
    powers = {r: power_gain * F.stft_power(audio, *r, cfg.pad_mode, cfg.dft)
              for r in ((cfg.n_fft, cfg.hop_length),) + cfg.mrstft_resolutions}
    main = powers[cfg.n_fft, cfg.hop_length]
    mel_db = F.power_to_db(F.mel_power(main, cfg), cfg.log_floor_db)
    return feats._replace(
        log_mel=mel_db, mfcc=F.mfcc_from_log_mel(mel_db, cfg.n_mfcc),
        centroid_hz=F.centroid_from_mag(F.magnitude(main, cfg.mag_eps), cfg.sample_rate),
        frame_energy=jnp.sum(main, axis=-1),
        mrstft_mag=tuple(F.magnitude(powers[r], cfg.mag_eps) for r in cfg.mrstft_resolutions))


def analyze_bf16(audio, cfg: F.FeatureConfig, dft: str = "fft") -> F.Features:
    """``analyze`` with the spectral path in bfloat16 (loudness, gain and the raw-clip
    statistics stay float32; with ``k_weighting="stft"`` the loudness takes one float32 STFT
    of its own here, which ``analyze`` shares). Constant tables are cast to bfloat16 so that no float32 NumPy
    constant promotes the arithmetic back to float32. ``dft="matmul"`` also takes the STFT as
    a bfloat16 matmul (``features``' own DFT matrices and framing, cast)."""
    bf = jnp.bfloat16
    if cfg.loudness_from_stft:  # as analyze: from the float32 n_fft power spectrogram
        loud = F.loudness_from_power(F.stft_power(audio, cfg.n_fft, cfg.hop_length, cfg.pad_mode), cfg.num_samples,
                                     cfg.sample_rate, cfg.n_fft, cfg.hop_length, cfg.loudness_floor_lufs)
    else:
        loud = F.loudness_lufs(audio, cfg.sample_rate, cfg.loudness_floor_lufs,
                               "scan" if cfg.k_weighting == "scan" else "fir")
    gain_db = F.loudness_gain_db(loud, cfg)
    x = audio * (10.0 ** (gain_db / 20.0))[..., None]

    def power(n_fft: int, hop: int):
        if dft == "matmul":
            frames = F.stft_frames(x.astype(bf), n_fft, hop, cfg.pad_mode)
            cos_m, sin_m = (jnp.asarray(m, bf) for m in F.dft_matrices(n_fft))
            re, im = frames @ cos_m, frames @ sin_m
            return re * re + im * im
        return F.stft_power(x, n_fft, hop, cfg.pad_mode, "fft").astype(bf)

    powers = {r: power(*r) for r in dict.fromkeys(((cfg.n_fft, cfg.hop_length),) + cfg.mrstft_resolutions)}
    main = powers[cfg.n_fft, cfg.hop_length]
    mel_db = F.power_to_db(main @ jnp.asarray(F.mel_filterbank(cfg), bf), cfg.log_floor_db)
    mag = F.magnitude(main, cfg.mag_eps)
    freqs_hz = jnp.asarray(np.fft.rfftfreq(cfg.n_fft, 1.0 / cfg.sample_rate), bf)
    return F.Features(
        log_mel=mel_db,
        mfcc=mel_db @ jnp.asarray(F.dct_matrix(cfg.n_mels, cfg.n_mfcc), bf),
        centroid_hz=(mag @ freqs_hz) / jnp.maximum(jnp.sum(mag, axis=-1), 1e-30),
        frame_energy=jnp.sum(main, axis=-1),
        mrstft_mag=tuple(F.magnitude(powers[r], cfg.mag_eps) for r in cfg.mrstft_resolutions),
        loudness_lufs=loud, gain_db=gain_db,
        peak=jnp.max(jnp.abs(audio), axis=-1), dc_offset=jnp.mean(audio, axis=-1),
        clip_fraction=jnp.mean((jnp.abs(audio) >= cfg.clip_level).astype(audio.dtype), axis=-1))


def to_bf16(feats: F.Features) -> F.Features:
    """Cached target features in bfloat16 (spectral fields only, as ``analyze_bf16``)."""
    return feats._replace(**{name: jax.tree.map(lambda a: a.astype(jnp.bfloat16), getattr(feats, name))
                             for name in ("log_mel", "mfcc", "centroid_hz", "frame_energy", "mrstft_mag")})


def make_step(variant: str, cfg: F.FeatureConfig):
    if variant in ("loudness-fir", "loudness-scan"):
        method = variant.split("-")[1]
        return lambda audio, target: F.loudness_lufs(audio, cfg.sample_rate, k_weighting=method)
    if variant == "bare-stft":
        return lambda audio, target: F.stft_power(audio, cfg.n_fft, cfg.hop_length, cfg.pad_mode, cfg.dft)
    if variant in BF16:
        dft = variant.split("-")[1]
        return lambda audio, target: L.matching_loss(analyze_bf16(audio, cfg, dft), to_bf16(target))
    analyze = {"separate-fft": analyze_separate,
               "scaled-powers": analyze_scaled_powers}.get(variant, F.analyze)
    run_cfg = {"shared-matmul": dataclasses.replace(cfg, dft="matmul"),
               "shared-scan-kw": dataclasses.replace(cfg, k_weighting="scan"),
               "shared-fir-kw": dataclasses.replace(cfg, k_weighting="fir"),
               "one-pass": dataclasses.replace(cfg, batch_chunk=None)}.get(variant, cfg)
    return lambda audio, target: L.matching_loss(analyze(audio, run_cfg), target)


def test_audio(batch: int, cfg: F.FeatureConfig, seed: int = 0) -> jax.Array:
    """Seeded test clips: 5-harmonic tones at random pitches (80-800 Hz) plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(cfg.num_samples) / cfg.sample_rate
    f0 = rng.uniform(80, 800, (batch, 1))
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6)) * 0.2
    return jnp.asarray(x + 0.01 * rng.standard_normal(x.shape), jnp.float32)


def time_variant(variant: str, batch: int, cfg: F.FeatureConfig, reps: int) -> dict:
    audio = test_audio(batch, cfg)
    target = jax.jit(F.analyze, static_argnums=1)(test_audio(batch, cfg, seed=1), cfg)
    compiled, compile_s, peak = compile_jit(jax.jit(make_step(variant, cfg)), audio, target)
    timing = time_calls(lambda: compiled(audio, target), reps)
    step_s = timing["step_s"]
    row = dict(variant=variant, batch=batch, compile_s=compile_s, step_ms=1e3 * step_s,
               cpu_ms=1e3 * timing["cpu_s"], clips_per_s=batch / step_s,
               x_realtime=batch * cfg.duration_s / step_s, xla_peak_bytes=peak, load_avg=load_avg())
    if variant in BF16:
        row["rel_err"] = accuracy(compiled(audio, target), audio, target, cfg)
    return row


def accuracy(terms, audio, target, cfg: F.FeatureConfig) -> dict:
    """Per loss term: (median, max) over the batch of |bf16 - f32| / max(|f32|, 1e-6), the
    float32 reference being ``shared-fft`` on the same clips."""
    ref = jax.jit(make_step("shared-fft", cfg))(audio, target)
    out = {}
    for name in L.LossTerms._fields:
        r = np.asarray(getattr(ref, name), np.float64)
        e = np.abs(np.asarray(getattr(terms, name).astype(jnp.float32), np.float64) - r) / np.maximum(np.abs(r), 1e-6)
        out[name] = (float(np.median(e)), float(np.max(e)))
    return out


def markdown_table(rows: list[dict]) -> str:
    lines = ["| variant | batch | compile (s) | step (ms, median) | CPU (ms) | clips/s | x realtime | load avg |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['batch']} | {r['compile_s']:.2f} | {r['step_ms']:.2f} "
                     f"| {r['cpu_ms']:.2f} | {r['clips_per_s']:,.0f} | {r['x_realtime']:,.0f} "
                     f"| {r['load_avg'][0]:.2f} |")
    return "\n".join(lines)


def accuracy_table(rows: list[dict]) -> str:
    """Relative error of each loss term of the bfloat16 variants vs float32 (median / max)."""
    acc = [r for r in rows if "rel_err" in r]
    if not acc:
        return ""
    names = list(acc[0]["rel_err"])
    lines = ["| variant | batch | " + " | ".join(names) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in names) + " |"]
    for r in acc:
        cells = [f"{r['rel_err'][n][0]:.1e} / {r['rel_err'][n][1]:.1e}" for n in names]
        lines.append(f"| {r['variant']} | {r['batch']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 256, 1024])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--matmul-max-batch", type=int, default=256,
                        help="skip the (slow on CPU) matmul DFTs above this batch")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--sample-rate", type=int, default=22050)
    parser.add_argument("--duration-s", type=float, default=0.5)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: batches 1 and 16, shared-fft and bf16-fft, 3 reps")
    parser.add_argument("--json", metavar="PATH", help="write setup and rows as JSON (after every row)")
    parser.add_argument("--results-md", default=RESULTS_MD, help="the RESULTS.md to write")
    parser.add_argument("--write-results", "--append-results", dest="write_results", action="store_true",
                        help=f"write the table to the '{SECTION}' section of benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.variants, args.reps = [1, 16], ["shared-fft", "bf16-fft"], 3
    cfg = F.FeatureConfig(sample_rate=args.sample_rate, duration_s=args.duration_s)
    meta = metadata(sys.argv[1:] if argv is None else argv, "benchmarks/features_throughput.py")

    rows = []
    for variant in args.variants:
        for batch in args.batches:
            if variant in ("shared-matmul", "bf16-matmul") and batch > args.matmul_max_batch:
                continue
            row = time_variant(variant, batch, cfg, args.reps)
            print(f"{variant:14s} batch {batch:5d}: {row['step_ms']:9.2f} ms  "
                  f"{row['x_realtime']:9.0f}x rt  (compile {row['compile_s']:.2f} s, load {row['load_avg'][0]})",
                  flush=True)
            rows.append(row)
            if args.json:
                write_json(args.json, dict(setup=meta, rows=rows))

    header = (f"{SECTION}\n\n"
              f"`matching_loss(analyze(audio), cached_target_features)` per batch of "
              f"{cfg.duration_s} s clips at {cfg.sample_rate} Hz (log-mel 64 x {cfg.num_frames}, "
              f"MFCC 20, centroid, loudness, MR-STFT {list(cfg.mrstft_fft_sizes)}); median of "
              f"{args.reps} calls after a warm-up; compile time measured separately. Variants: see the "
              f"docstring of benchmarks/features_throughput.py.\n\n" + metadata_lines(meta, load_avg()))
    table = markdown_table(rows)
    acc = accuracy_table(rows)
    text = header + "\n" + table + "\n\n" + notes(rows)
    if acc:
        text += ("\n\nbfloat16 accuracy: relative error of each loss term vs the float32 `shared-fft` "
                 "loss on the same clips, median / max over the batch:\n\n" + acc)
    print("\n" + text)
    if args.write_results:
        write_sections({SECTION: text}, args.results_md)
        print(f"\nwrote section '{SECTION}' to {args.results_md}")
    return dict(setup=meta, rows=rows)


def notes(rows: list[dict]) -> str:
    """Ratios between variants at each batch size, and how to read them, for RESULTS.md."""
    by = {(r["variant"], r["batch"]): r["step_ms"] for r in rows}
    batches = sorted({r["batch"] for r in rows})
    parts = []
    for batch in batches:
        base = by.get(("shared-fft", batch))
        if base is None:
            continue
        ratios = [f"{v} {by[(v, batch)] / base:.2f}x" for v in
                  ("separate-fft", "scaled-powers", "shared-scan-kw", "shared-matmul", "bf16-fft",
                   "bf16-matmul") if (v, batch) in by]
        if ratios:
            parts.append(f"batch {batch}: " + ", ".join(ratios))
    loud = [f"batch {b}: scan/fir {by[('loudness-scan', b)] / by[('loudness-fir', b)]:.2f}x"
            for b in batches if ("loudness-scan", b) in by and ("loudness-fir", b) in by]
    text = []
    if parts:
        text.append("Step time relative to `shared-fft` (> 1: the variant is slower): " + "; ".join(parts) + ".")
    if loud:
        text.append("Loudness alone, K-weighting as `lax.scan` vs FFT convolution: " + "; ".join(loud) + ".")
    text.append(
        "How to read the ratios (on a shared CPU, differences under ~10 % are noise): "
        "`separate-fft` vs `shared-fft` shows whether hand-sharing the STFTs still matters under "
        "jit (XLA's common-subexpression elimination merges identical STFTs inside one jit); "
        "`scaled-powers` whether scaling the clip before the STFTs beats scaling ~90k power bins "
        "after them; `shared-matmul` the cost of a DFT matmul (~60x the FLOPs of the FFT at "
        "n_fft 1024; kept as an option for accelerators); `shared-scan-kw` and the loudness rows "
        "the K-weighting as a sequential scan vs an FFT convolution (the default: a scan pays a "
        "loop iteration per sample on an accelerator, and the FFT form is the more accurate in "
        "float32); `bf16-*` whether bfloat16 after (or for) the STFT buys speed on this device, "
        "with its accuracy cost in the table below.")
    return "\n\n".join(text)


if __name__ == "__main__":
    main()
