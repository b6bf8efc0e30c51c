"""ITU-R BS.1770-4 loudness: K-weighting, gating blocks, integrated loudness in LUFS, and the
gain that normalises a clip to a reference loudness.

References: ITU-R BS.1770-4 (2015), "Algorithms to measure audio programme loudness and
true-peak audio level", eq. 1-2 and the gating of section 2.8; libebur128 for the analog
prototypes of the K-weighting filters at any sample rate; pyloudnorm is the test reference.

Pure and jit/vmap-able, leading batch dimensions allowed (``"*batch samples"``). Constant
tables (biquad coefficients, the truncated impulse response) are built in NumPy.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

LUFS_OFFSET_DB = -0.691  # BS.1770-4 eq. 2: L = -0.691 + 10 log10(sum_i G_i z_i)
ABSOLUTE_GATE_LUFS = -70.0  # BS.1770-4 gamma_a
RELATIVE_GATE_LU = -10.0  # BS.1770-4 gamma_r offset


def is_traced(x) -> bool:
    """True inside jit/vmap/grad, where a check would cost time and cannot raise."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(x))


def check_audio(audio, caller: str):
    """Public-boundary check of concrete audio for the analysis functions (loudness, features,
    losses): a floating dtype and finite samples. One NaN sample makes every spectral bin,
    the loudness and so every loss term NaN; integer PCM (int16) would be analysed at 32768x
    its level. Traced audio passes unchecked (the compiled path stays as fast as before).
    Returns ``audio`` unchanged."""
    if is_traced(audio):
        return audio
    if not hasattr(audio, "dtype"):
        audio = np.asarray(audio)
    dtype = np.dtype(audio.dtype)
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(f"{caller}: audio must be floating point in [-1, 1], got dtype {dtype}; "
                        "convert PCM first, e.g. x.astype(np.float32) / 32768 for int16")
    finite = jnp.isfinite(audio) if isinstance(audio, jax.Array) else np.isfinite(np.asarray(audio))
    if not bool(finite.all()):
        bad = np.argwhere(~np.asarray(finite))
        raise ValueError(f"{caller}: audio has {len(bad)} NaN/Inf sample(s), first at index "
                         f"{tuple(int(i) for i in bad[0])}; one would make every feature and loss "
                         "term NaN. Replace them (np.nan_to_num) or fix the source")
    return audio if isinstance(audio, jax.Array) else jnp.asarray(audio)


def k_weighting_coeffs(sample_rate: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """BS.1770-4 K-weighting as two biquads ((b, a) high-shelf, (b, a) high-pass) for any rate.

    The analog prototypes (centre frequency, gain, Q) are those fitted to the standard's 48 kHz
    coefficients by libebur128 (``ebur128_init_filter``); the bilinear transform at
    ``sample_rate`` reproduces the standard's table to ~1e-8 at 48 kHz (tested).
    """
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / sample_rate)
    vh = 10.0 ** (gain_db / 20.0)
    vb = vh ** 0.4996667741545416
    a0 = 1.0 + k / q + k * k
    shelf_b = np.array([(vh + vb * k / q + k * k) / a0, 2.0 * (k * k - vh) / a0,
                        (vh - vb * k / q + k * k) / a0])
    shelf_a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / sample_rate)
    a0 = 1.0 + k / q + k * k
    hp_b = np.array([1.0, -2.0, 1.0])
    hp_a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    return (shelf_b, shelf_a), (hp_b, hp_a)


def loudness_blocks(num_samples: int, sample_rate: int) -> tuple[int, int, int]:
    """(block_len, hop, n_blocks) of the BS.1770-4 gating blocks for a clip.

    400 ms blocks with 75 % overlap (hop = round(0.1 s), block = 4 hops), starting at sample 0,
    as many as fit entirely (pyloudnorm's placement for whole-second clips). A clip shorter
    than one block is measured as ONE block spanning the whole clip (the standard is undefined
    there; pyloudnorm raises). The default 0.5 s clip gets two blocks, [0, 0.4) s and
    [0.1, 0.5) s, and the usual absolute and relative gates.
    """
    hop = int(round(0.1 * sample_rate))
    block = 4 * hop
    if num_samples < block:
        return num_samples, num_samples, 1
    return block, hop, (num_samples - block) // hop + 1


def _biquad_cascade(x: Float[Array, "*batch samples"],
                    sections: tuple[tuple[np.ndarray, np.ndarray], ...]) -> Float[Array, "*batch samples"]:
    """Cascade of fixed biquads, transposed direct form II, via one ``lax.scan`` over time.

    Zero initial state, like ``scipy.signal.lfilter``. Time-major: the scan carries a
    vector of states over the batch.
    """
    coeffs = [(np.float32(b[0]), np.float32(b[1]), np.float32(b[2]),
               np.float32(a[1]), np.float32(a[2])) for b, a in sections]

    def step(state, sample):
        new_state = []
        y = sample
        for (b0, b1, b2, a1, a2), (s1, s2) in zip(coeffs, state):
            out = b0 * y + s1
            new_state.append((b1 * y - a1 * out + s2, b2 * y - a2 * out))
            y = out
        return tuple(new_state), y

    time_major = jnp.moveaxis(x, -1, 0)
    zeros = jnp.zeros(x.shape[:-1], x.dtype)
    init = tuple((zeros, zeros) for _ in coeffs)
    _, y = jax.lax.scan(step, init, time_major)
    return jnp.moveaxis(y, 0, -1)


@functools.lru_cache(maxsize=None)
def k_weighting_impulse_response(sample_rate: int, tail_tolerance: float = 1e-8) -> np.ndarray:
    """K-weighting impulse response (float64 recursion), truncated where the remaining tail's
    absolute sum falls below ``tail_tolerance`` times the total: at most that relative error
    per output sample. (~0.2 s long: the 38 Hz high-pass rings longest.)"""
    n = int(2.0 * sample_rate)
    h = np.zeros(n)
    h[0] = 1.0
    for b, a in k_weighting_coeffs(sample_rate):
        y = np.zeros(n)
        x1 = x2 = y1 = y2 = 0.0
        for i in range(n):
            y[i] = b[0] * h[i] + b[1] * x1 + b[2] * x2 - a[1] * y1 - a[2] * y2
            x2, x1, y2, y1 = x1, h[i], y1, y[i]
        h = y
    tail = np.cumsum(np.abs(h)[::-1])[::-1]
    length = int(np.argmax(tail < tail_tolerance * tail[0]))
    return h[:max(length, 1)].astype(np.float32)


def k_weight(audio: Float[Array, "*batch samples"], sample_rate: int,
             method: str = "fir") -> Float[Array, "*batch samples"]:
    """BS.1770-4 K-weighting filter (high shelf then high pass) at ``sample_rate``.

    ``method="scan"`` runs the two biquads sample by sample (``lax.scan``); ``"fir"`` convolves
    with the truncated impulse response by FFT: the same filter to ~1e-6 of full scale
    (float32 FFT rounding; the float32 recursion drifts ~4e-5 near the 38 Hz poles), and no
    11,025-step sequential loop, which matters on accelerators. On the 2-core CPU neither
    wins at every batch size (benchmarks/RESULTS.md, "Features and losses").
    """
    return _k_weight(check_audio(audio, "k_weight"), sample_rate, method)


def _k_weight(audio, sample_rate: int, method: str = "fir"):
    if method == "scan":
        return _biquad_cascade(audio, k_weighting_coeffs(sample_rate))
    h = k_weighting_impulse_response(sample_rate)
    num_samples = audio.shape[-1]
    n = 1 << int(math.ceil(math.log2(num_samples + h.size - 1)))
    spectrum = jnp.fft.rfft(audio, n, axis=-1) * np.fft.rfft(h.astype(np.float64), n).astype(np.complex64)
    return jnp.fft.irfft(spectrum, n, axis=-1)[..., :num_samples].astype(audio.dtype)


def _lufs(mean_square, floor_lufs: float):
    floor_ms = 10.0 ** ((floor_lufs - LUFS_OFFSET_DB) / 10.0)
    return LUFS_OFFSET_DB + 10.0 * jnp.log10(jnp.maximum(mean_square, floor_ms))


def loudness_lufs(audio: Float[Array, "*batch samples"], sample_rate: int,
                  floor_lufs: float = -100.0, k_weighting: str = "fir") -> Float[Array, "*batch"]:
    """Integrated loudness in LUFS (ITU-R BS.1770-4, mono, channel weight 1).

    K-weighting, 400 ms blocks at 75 % overlap (``loudness_blocks``: a clip shorter than
    400 ms is one whole-clip block), absolute gate at -70 LUFS, relative gate at -10 LU below
    the absolutely-gated mean. Gates are masks over a fixed number of blocks. If no block
    passes the gates (e.g. silence or a clip quieter than -70 LUFS), the ungated mean of all
    blocks is used instead (pyloudnorm returns -inf there), and the result is floored at
    ``floor_lufs``: silence gives exactly ``floor_lufs``, never NaN or -inf, and a very quiet
    sound still has a finite loudness and gradient. ``k_weighting`` selects the filter
    implementation (see ``k_weight``).
    """
    return _loudness_lufs(check_audio(audio, "loudness_lufs"), sample_rate, floor_lufs, k_weighting)


def _loudness_lufs(audio, sample_rate: int, floor_lufs: float = -100.0, k_weighting: str = "fir"):
    num_samples = audio.shape[-1]
    block, hop, n_blocks = loudness_blocks(num_samples, sample_rate)
    weighted_sq = jnp.square(_k_weight(audio, sample_rate, k_weighting))
    if n_blocks == 1:
        block_ms = jnp.mean(weighted_sq[..., :block], axis=-1, keepdims=True)
    else:
        n_hops = n_blocks + block // hop - 1
        hops = jnp.sum(weighted_sq[..., :n_hops * hop].reshape(*audio.shape[:-1], n_hops, hop),
                       axis=-1)
        block_ms = sum(hops[..., i:i + n_blocks] for i in range(block // hop)) / block
    return _gated_loudness(block_ms, floor_lufs)


def _gated_loudness(block_ms: Float[Array, "*batch blocks"], floor_lufs: float) -> Float[Array, "*batch"]:
    """BS.1770-4 gating (absolute, then relative) of the K-weighted block mean squares, with
    the ungated mean where no block passes, floored at ``floor_lufs`` (see ``loudness_lufs``)."""
    block_lufs = _lufs(block_ms, -200.0)

    def gated_mean(mask):
        count = jnp.sum(mask, axis=-1)
        return jnp.sum(block_ms * mask, axis=-1) / jnp.maximum(count, 1), count

    above_abs = block_lufs >= ABSOLUTE_GATE_LUFS
    abs_mean, _ = gated_mean(above_abs)
    relative_gate_lufs = _lufs(abs_mean, -200.0) + RELATIVE_GATE_LU
    passed = above_abs & (block_lufs > relative_gate_lufs[..., None])
    gated, count = gated_mean(passed)
    mean_square = jnp.where(count > 0, gated, jnp.mean(block_ms, axis=-1))
    return _lufs(mean_square, floor_lufs)


@functools.lru_cache(maxsize=None)
def k_weighting_power_response(sample_rate: int, n_fft: int) -> np.ndarray:
    """|H_K(f)|^2 of the two K-weighting biquads at the ``n_fft // 2 + 1`` rfft bin
    frequencies (float64 evaluation of the transfer function on the unit circle)."""
    z1 = np.exp(-2j * np.pi * np.arange(n_fft // 2 + 1) / n_fft)  # z^-1 at each bin
    response = np.ones_like(z1)
    for b, a in k_weighting_coeffs(sample_rate):
        response *= (b[0] + b[1] * z1 + b[2] * z1 * z1) / (a[0] + a[1] * z1 + a[2] * z1 * z1)
    return (np.abs(response) ** 2).astype(np.float32)


@functools.lru_cache(maxsize=None)
def stft_block_weights(num_samples: int, sample_rate: int, n_fft: int, hop: int) -> np.ndarray:
    """(frames, blocks) matrix that turns per-frame energies of a centred Hann STFT into the
    mean square of each BS.1770-4 gating block (``loudness_blocks``).

    A periodic Hann window at hop n_fft / R (R >= 3) satisfies sum_t w^2[n - t hop] = 3 n_fft / (8 hop)
    (constant overlap-add of w^2), so frame t's windowed energy divided by that constant is
    the signal energy of the hop-long interval centred on t hop; each block sums the intervals
    it overlaps, in proportion to the overlap."""
    block, block_hop, n_blocks = loudness_blocks(num_samples, sample_rate)
    n_frames = 1 + num_samples // hop
    window_energy = float(np.sum(np.square(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft))))
    lo = np.arange(n_frames)[:, None] * hop - hop / 2.0
    starts = np.arange(n_blocks)[None, :] * block_hop
    lo_clip = np.maximum(lo, np.maximum(starts, 0.0))
    hi_clip = np.minimum(lo + hop, np.minimum(starts + block, num_samples))
    overlap = np.maximum(hi_clip - lo_clip, 0.0) / hop
    return (overlap * hop / window_energy / block).astype(np.float32)


@functools.lru_cache(maxsize=None)
def k_weighted_bin_energy(sample_rate: int, n_fft: int) -> np.ndarray:
    """(n_fft // 2 + 1,) weights that turn a frame's one-sided power spectrum into its
    K-weighted windowed energy: |H_K(f)|^2 (``k_weighting_power_response``) times Parseval's
    one-sided bin weights (2 / n_fft, the DC and Nyquist bins 1 / n_fft)."""
    bin_weight = np.full(n_fft // 2 + 1, 2.0 / n_fft, np.float32)
    bin_weight[0] = bin_weight[-1] = 1.0 / n_fft
    return k_weighting_power_response(sample_rate, n_fft) * bin_weight


def loudness_from_frame_energy(frame_energy: Float[Array, "*batch frames"], num_samples: int, sample_rate: int,
                               n_fft: int, hop: int, floor_lufs: float = -100.0) -> Float[Array, "*batch"]:
    """Integrated loudness (LUFS) from each STFT frame's K-weighted windowed energy (a power
    spectrogram times ``k_weighted_bin_energy``): ``stft_block_weights`` gathers it into the
    BS.1770-4 blocks and the gating is ``loudness_lufs``'s."""
    if n_fft % hop or n_fft // hop < 3:
        raise ValueError(f"loudness from a power spectrogram needs a hop that divides n_fft at least 3 times "
                         f"(constant overlap-add of the squared Hann window), got n_fft {n_fft}, hop {hop}")
    block_ms = frame_energy @ stft_block_weights(num_samples, sample_rate, n_fft, hop)
    return _gated_loudness(block_ms, floor_lufs)


def loudness_from_power(power: Float[Array, "*batch frames bins"], num_samples: int, sample_rate: int,
                        n_fft: int, hop: int, floor_lufs: float = -100.0) -> Float[Array, "*batch"]:
    """Integrated loudness (LUFS) from a centred periodic-Hann power spectrogram of the clip
    (``features.stft_power(audio, n_fft, hop)``, n_fft / hop an integer >= 3), so the analysis needs no
    STFT or filter of its own: K-weighting is applied as |H_K(f)|^2 on the bins
    (``k_weighting_power_response``), Parseval's theorem turns each frame's weighted power into
    windowed energy (``k_weighted_bin_energy``), ``stft_block_weights`` gathers it into the
    BS.1770-4 blocks, and the gating is ``loudness_lufs``'s. Differs from the time-domain filter
    by the frequency resolution of the bins (the 38 Hz high-pass is a few bins wide) and by how a
    block edge splits a frame's energy: within 0.2 LU of it on tones, noise and gated clips
    (tests/jaxsynth/test_loudness.py).
    """
    return loudness_from_frame_energy(power @ k_weighted_bin_energy(sample_rate, n_fft), num_samples,
                                      sample_rate, n_fft, hop, floor_lufs)


def loudness_gain_db(loudness: Float[Array, "*batch"], reference_lufs: float = -20.0,
                     max_gain_db: float = 40.0) -> Float[Array, "*batch"]:
    """Gain that brings ``loudness`` to ``reference_lufs``, clipped to +-``max_gain_db``.

    The clip keeps silence and near-silence from being amplified into full-scale noise.
    """
    return jnp.clip(reference_lufs - loudness, -max_gain_db, max_gain_db)
