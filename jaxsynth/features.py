"""Audio features for matching: STFT, mel, log-mel, deltas, MFCC, centroid, loudness.

Every function is pure and jit/vmap-able; leading batch dimensions are allowed everywhere
(``"*batch samples"``). Constant tables (windows, the mel filterbank, the DCT and delta
matrices, framing indices) are built once per ``FeatureConfig`` in
NumPy (``functools.lru_cache`` keyed by the hashable config) and enter traced code as
constants.

Conventions, and what we match:

* STFT: centered frames with ``pad_mode`` padding of ``n_fft // 2`` on both sides, periodic
  Hann window, ``1 + num_samples // hop`` frames; the same as ``torch.stft`` (so auraloss) and
  ``librosa.stft(..., pad_mode="reflect")``. librosa >= 0.10 pads with zeros by default; our
  tests pass ``pad_mode="reflect"`` to librosa.
* Mel: the Slaney mel scale and Slaney area normalisation (librosa's defaults,
  ``htk=False, norm="slaney"``), applied to the power spectrogram (``power=2``). HTK's scale is
  not offered: one choice keeps features comparable across the project.
* Log-mel: ``10 * log10(max(mel_power, 10 ** (log_floor_db / 10)))``, i.e.
  ``librosa.power_to_db(S, ref=1.0, amin=10 ** (log_floor_db / 10), top_db=None)``. The floor is
  absolute (not relative to the clip's peak as librosa's ``top_db``), so a loss between two
  clips never depends on either clip's maximum. -80 dB is well below the quietest part of a
  loudness-normalised note that is worth matching (a full-scale sine reads about +48 dB).
* MFCC: orthonormal DCT-II over the mel axis of the log-mel, first ``n_mfcc`` coefficients, as
  ``librosa.feature.mfcc(S=log_mel)``. (``librosa.feature.mfcc(y=...)`` instead applies
  ``top_db=80`` relative to the clip's peak; we do not.)
* Deltas: Savitzky-Golay derivatives over ``delta_width`` frames with edge handling identical
  to ``librosa.feature.delta(width=9, order=1 or 2, mode="interp")``: a polynomial of degree
  ``order`` fitted to the first/last ``width`` frames has a constant ``order``-th derivative,
  so the edge frames take the value of the nearest interior frame.
* Spectral centroid: per frame, magnitude-weighted mean frequency in Hz
  (``librosa.feature.spectral_centroid``, ``power=1``); 0 Hz for an all-zero frame.
* Loudness: ITU-R BS.1770-4 integrated loudness (mono, channel gain 1), in ``loudness.py``
  (``loudness.loudness_lufs`` documents the short-clip blocking and the silence floor).

``analyze`` computes everything the matching loss needs from ONE loudness measurement and one
STFT per resolution: spectral features are of the loudness-normalised clip (gain to
``reference_lufs``, clipped to ``[-max_gain_db, +max_gain_db]``), so they carry no level
information; level is carried by ``loudness_lufs`` alone. The ``n_fft``/``hop_length`` STFT
is shared by log-mel, MFCC, centroid and the matching MR-STFT resolution.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jaxsynth.loudness import (ABSOLUTE_GATE_LUFS, LUFS_OFFSET_DB, RELATIVE_GATE_LU,  # noqa: F401
                               _loudness_lufs, check_audio, is_traced, k_weight, k_weighted_bin_energy,
                               k_weighting_coeffs, k_weighting_impulse_response, loudness_blocks,
                               loudness_from_frame_energy, loudness_from_power, loudness_lufs)
from jaxsynth.loudness import loudness_gain_db as _gain_to_reference_db



@dataclass(frozen=True)
class FeatureConfig:
    """Static analysis settings (hashable: pass as a static argument to jit).

    ``fmax_hz=None`` means ``sample_rate / 2``. ``mrstft_fft_sizes`` are the MR-STFT
    resolutions; each uses ``hop = size // mrstft_hop_divisor`` and a full-length Hann window.
    ``dft="fft"`` uses ``jnp.fft.rfft``; ``"matmul"`` multiplies frames by a precomputed DFT
    matrix (faster on accelerators for small sizes, slower on CPU: see benchmarks/RESULTS.md).
    ``k_weighting="stft"`` measures the loudness from the shared ``n_fft`` power spectrogram
    (``loudness.loudness_from_power``: within 0.2 LU of the time-domain filter, and no STFT or
    FFT convolution of its own) when the hop allows it (``loudness_from_stft``), else with the
    FIR filter; ``"fir"``/``"scan"`` filter the clip (``loudness.k_weight``).
    ``batch_chunk``: ``analyze`` runs a batch larger than this as a loop over chunks of this many
    clips, so that its temporaries (framed signals, spectra: ~25x the audio) stay near cache
    size; on the 2-core CPU 64 clips per chunk cost 2.5x less per clip than one pass over 4,096
    clips (benchmarks/RESULTS.md, "Features and losses"). On an accelerator, where one wide
    pass is what the hardware wants, use ``None``.
    """

    sample_rate: int = 22050
    duration_s: float = 0.5
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 64
    fmin_hz: float = 0.0
    fmax_hz: float | None = None
    n_mfcc: int = 20
    pad_mode: str = "reflect"
    log_floor_db: float = -80.0
    mag_eps: float = 1e-8  # power floor before sqrt/log in MR-STFT and centroid (auraloss eps)
    delta_width: int = 9
    # three resolutions, not the usual four with 256: searching without the 256-point one finds
    # presets as close by the four-resolution loss and by log-mel (paired over 64 presets and
    # two seeds), and each resolution costs about a fifth of the environment step
    # (benchmarks/RESULTS.md, "Which MR-STFT resolutions matching needs")
    mrstft_fft_sizes: tuple[int, ...] = (512, 1024, 2048)
    mrstft_hop_divisor: int = 4
    reference_lufs: float = -20.0
    max_gain_db: float = 40.0
    loudness_floor_lufs: float = -100.0
    clip_level: float = 0.99  # |sample| at or above this counts as clipped
    dft: str = "fft"
    k_weighting: str = "stft"  # loudness from the shared STFT; "fir"/"scan": time-domain filter
    batch_chunk: int | None = 64  # clips per step of analyze's loop over a batch; None: all at once

    def __post_init__(self):
        fmax = self.fmax_hz_resolved
        checks = [
            (self.sample_rate > 0, "sample_rate must be positive"),
            (self.num_samples > max(self.n_fft, *self.mrstft_fft_sizes) // 2,
             f"clip of {self.num_samples} samples is too short for reflect padding of the "
             f"largest FFT ({max(self.n_fft, *self.mrstft_fft_sizes)}); lengthen duration_s "
             "or use smaller FFT sizes"),
            (0 < self.hop_length <= self.n_fft, "need 0 < hop_length <= n_fft"),
            (0.0 <= self.fmin_hz < fmax <= self.sample_rate / 2,
             "need 0 <= fmin_hz < fmax_hz <= sample_rate / 2"),
            (0 < self.n_mfcc <= self.n_mels, "need 0 < n_mfcc <= n_mels"),
            (self.delta_width >= 3 and self.delta_width % 2 == 1,
             "delta_width must be odd and >= 3 (librosa.feature.delta)"),
            (self.pad_mode in ("reflect", "constant"), "pad_mode must be 'reflect' or 'constant'"),
            (self.dft in ("fft", "matmul"), "dft must be 'fft' or 'matmul'"),
            (self.k_weighting in ("stft", "fir", "scan"), "k_weighting must be 'stft', 'fir' or 'scan'"),
            (self.max_gain_db >= 0.0, "max_gain_db must be >= 0"),
            (0.0 < self.clip_level <= 1.0, "clip_level must be in (0, 1]"),
            (len(self.mrstft_fft_sizes) > 0, "mrstft_fft_sizes must not be empty"),
            (self.batch_chunk is None or self.batch_chunk > 0, "batch_chunk must be None or > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"FeatureConfig: {message} (got {self})")

    @property
    def loudness_from_stft(self) -> bool:
        """True when the loudness is read from the shared STFT: ``k_weighting="stft"`` and a
        hop that divides n_fft at least 3 times (the squared Hann window then overlap-adds to a
        constant); otherwise the time-domain FIR filter measures it."""
        return (self.k_weighting == "stft" and self.n_fft % self.hop_length == 0
                and self.n_fft // self.hop_length >= 3)

    @property
    def num_samples(self) -> int:
        return int(round(self.sample_rate * self.duration_s))

    @property
    def fmax_hz_resolved(self) -> float:
        return self.sample_rate / 2.0 if self.fmax_hz is None else float(self.fmax_hz)

    @property
    def num_frames(self) -> int:
        return 1 + self.num_samples // self.hop_length

    @property
    def mrstft_resolutions(self) -> tuple[tuple[int, int], ...]:
        """(n_fft, hop) per MR-STFT resolution."""
        return tuple((n, n // self.mrstft_hop_divisor) for n in self.mrstft_fft_sizes)


class Features(NamedTuple):
    """Everything the matching loss and the observation need from one clip.

    Spectral fields describe the loudness-normalised clip (see module docstring).
    ``mrstft_mag`` holds one ``(frames_r, n_fft_r // 2 + 1)`` magnitude per MR-STFT resolution.
    """

    log_mel: Float[Array, "*batch frames n_mels"]
    mfcc: Float[Array, "*batch frames n_mfcc"]
    centroid_hz: Float[Array, "*batch frames"]
    frame_energy: Float[Array, "*batch frames"]  # sum of power over bins, normalised clip
    mrstft_mag: tuple[Float[Array, "*batch f b"], ...]
    loudness_lufs: Float[Array, "*batch"]
    gain_db: Float[Array, "*batch"]  # gain applied to reach reference_lufs (clipped)
    peak: Float[Array, "*batch"]  # raw clip, max |x|
    dc_offset: Float[Array, "*batch"]  # raw clip, mean(x)
    clip_fraction: Float[Array, "*batch"]  # raw clip, fraction of |x| >= clip_level


# ---------------------------------------------------------------------------------------
# Constant tables (NumPy, built once per config)


def hz_to_mel_slaney(freq_hz: np.ndarray) -> np.ndarray:
    """Slaney (Auditory Toolbox) mel scale: linear below 1 kHz, log above (librosa htk=False)."""
    freq_hz = np.asarray(freq_hz, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    linear = freq_hz / f_sp
    logpart = min_log_mel + np.log(np.maximum(freq_hz, min_log_hz) / min_log_hz) / logstep
    return np.where(freq_hz >= min_log_hz, logpart, linear)


def mel_to_hz_slaney(mel: np.ndarray) -> np.ndarray:
    """Inverse of ``hz_to_mel_slaney``."""
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)),
                    f_sp * mel)


@functools.lru_cache(maxsize=None)
def mel_filterbank(cfg: FeatureConfig) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) triangular Slaney-scale filters with Slaney area norm.

    Same construction as ``librosa.filters.mel(htk=False, norm="slaney")`` (transposed so that
    ``power @ fb`` maps frames of bins to frames of bands).
    """
    fft_hz = np.linspace(0.0, cfg.sample_rate / 2.0, 1 + cfg.n_fft // 2)
    mel_edges = np.linspace(hz_to_mel_slaney(cfg.fmin_hz), hz_to_mel_slaney(cfg.fmax_hz_resolved),
                            cfg.n_mels + 2)
    edges_hz = mel_to_hz_slaney(mel_edges)
    widths_hz = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths_hz[:-1, None]
    upper = ramps[2:] / widths_hz[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return weights.T.astype(np.float32)


@functools.lru_cache(maxsize=None)
def main_band_matrix(cfg: FeatureConfig) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels + 2): the mel filterbank, a column of ones and the K-weighted
    Parseval column of ``loudness.loudness_from_power``, so that one product of the main power
    spectrogram gives the mel-band power, each frame's energy and its K-weighted energy
    (three passes over the spectrogram in one)."""
    k_column = k_weighted_bin_energy(cfg.sample_rate, cfg.n_fft)
    ones = np.ones(cfg.n_fft // 2 + 1, np.float32)
    return np.concatenate([mel_filterbank(cfg), ones[:, None], k_column[:, None]], axis=1).astype(np.float32)


@functools.lru_cache(maxsize=None)
def dct_matrix(n_mels: int, n_mfcc: int) -> np.ndarray:
    """(n_mels, n_mfcc) orthonormal DCT-II (``scipy.fft.dct(type=2, norm="ortho")``)."""
    n = np.arange(n_mels)
    k = np.arange(n_mfcc)
    basis = np.cos(np.pi * k[None, :] * (2 * n[:, None] + 1) / (2 * n_mels)) * math.sqrt(2.0 / n_mels)
    basis[:, 0] *= math.sqrt(0.5)
    return basis.astype(np.float32)


@functools.lru_cache(maxsize=None)
def savgol_derivative_coeffs(width: int, order: int) -> np.ndarray:
    """Correlation taps for the ``order``-th derivative of a degree-``order`` least-squares fit
    over ``width`` points centred on 0 (``scipy.signal.savgol_coeffs(width, order, order,
    use="dot")``), as used by ``librosa.feature.delta``."""
    offsets = np.arange(width, dtype=np.float64) - width // 2
    vander = offsets[:, None] ** np.arange(order + 1)[None, :]
    return (np.linalg.pinv(vander)[order] * math.factorial(order)).astype(np.float32)


@functools.lru_cache(maxsize=None)
def hann_window(n: int) -> np.ndarray:
    """Periodic Hann window (``scipy.signal.get_window("hann", n)``, ``torch.hann_window``)."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _frame_indices(num_samples: int, n_fft: int, hop: int) -> np.ndarray:
    num_frames = 1 + num_samples // hop
    return (np.arange(num_frames)[:, None] * hop + np.arange(n_fft)[None, :]).astype(np.int32)


@functools.lru_cache(maxsize=None)
def _reflected_frame_indices(num_samples: int, n_fft: int, hop: int) -> np.ndarray:
    """``_frame_indices`` into the clip itself, the ``n_fft // 2`` samples of reflect padding on
    each side mapped back to the samples they mirror (``np.pad(mode="reflect")``: no edge
    repeat), so that framing needs no padded copy of the clip."""
    i = _frame_indices(num_samples, n_fft, hop) - n_fft // 2
    i = np.where(i < 0, -i, i)
    return np.where(i >= num_samples, 2 * (num_samples - 1) - i, i).astype(np.int32)


@functools.lru_cache(maxsize=None)
def dft_matrices(n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """Windowed real-input DFT as two (n_fft, n_fft // 2 + 1) matrices (cos, -sin)."""
    n = np.arange(n_fft)[:, None]
    k = np.arange(n_fft // 2 + 1)[None, :]
    angle = 2.0 * np.pi * ((n * k) % n_fft) / n_fft
    window = hann_window(n_fft).astype(np.float64)[:, None]
    return ((window * np.cos(angle)).astype(np.float32),
            (-window * np.sin(angle)).astype(np.float32))


# ---------------------------------------------------------------------------------------
# Traced functions


def stft_frames(audio: Float[Array, "*batch samples"], n_fft: int, hop: int,
                pad_mode: str) -> Float[Array, "*batch frames n_fft"]:
    """Centered frames of ``stft_power`` (``n_fft // 2`` samples of ``pad_mode`` padding on
    each side, a frame every ``hop`` samples), unwindowed."""
    if pad_mode == "reflect":
        return audio[..., _reflected_frame_indices(audio.shape[-1], n_fft, hop)]
    pad = [(0, 0)] * (audio.ndim - 1) + [(n_fft // 2, n_fft // 2)]
    padded = jnp.pad(audio, pad, mode=pad_mode)
    return padded[..., _frame_indices(audio.shape[-1], n_fft, hop)]


def stft_power(audio: Float[Array, "*batch samples"], n_fft: int, hop: int,
               pad_mode: str = "reflect", dft: str = "fft") -> Float[Array, "*batch frames bins"]:
    """|STFT|^2, centered periodic-Hann frames (``torch.stft`` / librosa with reflect pad).

    Power (not magnitude) is returned: it is smooth everywhere, so gradients stay finite at
    silence; take ``sqrt(max(power, eps))`` for a magnitude.
    """
    return _stft_power(check_audio(audio, "stft_power"), n_fft, hop, pad_mode, dft)


def _stft_power(audio, n_fft: int, hop: int, pad_mode: str = "reflect", dft: str = "fft"):
    frames = stft_frames(audio, n_fft, hop, pad_mode)
    if dft == "matmul":
        cos_m, sin_m = dft_matrices(n_fft)
        re, im = frames @ cos_m, frames @ sin_m
        return re * re + im * im
    spec = jnp.fft.rfft(frames * hann_window(n_fft), axis=-1)
    return jnp.real(spec) ** 2 + jnp.imag(spec) ** 2


def magnitude(power: Float[Array, "..."], eps: float = 1e-8) -> Float[Array, "..."]:
    """``sqrt(max(power, eps))`` as in auraloss' ``STFTLoss.stft`` (finite gradient at 0)."""
    return jnp.sqrt(jnp.maximum(power, eps))


def mel_power(power: Float[Array, "*batch frames bins"],
              cfg: FeatureConfig) -> Float[Array, "*batch frames n_mels"]:
    """Mel-band power from an ``n_fft`` power spectrogram (Slaney filterbank)."""
    return power @ mel_filterbank(cfg)


def power_to_db(power: Float[Array, "..."], floor_db: float) -> Float[Array, "..."]:
    """``10 log10(max(power, 10^(floor_db/10)))`` (librosa.power_to_db, ref=1, top_db=None)."""
    return 10.0 * jnp.log10(jnp.maximum(power, 10.0 ** (floor_db / 10.0)))


def log_mel(audio: Float[Array, "*batch samples"],
            cfg: FeatureConfig) -> Float[Array, "*batch frames n_mels"]:
    """Log-mel spectrogram in dB with an absolute floor of ``cfg.log_floor_db``."""
    power = stft_power(audio, cfg.n_fft, cfg.hop_length, cfg.pad_mode, cfg.dft)
    return power_to_db(mel_power(power, cfg), cfg.log_floor_db)


def mfcc_from_log_mel(log_mel_db: Float[Array, "*batch frames n_mels"],
                      n_mfcc: int) -> Float[Array, "*batch frames n_mfcc"]:
    """MFCC = orthonormal DCT-II of the dB log-mel (``librosa.feature.mfcc(S=log_mel_db)``)."""
    return log_mel_db @ dct_matrix(log_mel_db.shape[-1], n_mfcc)


def delta(features: Float[Array, "*batch frames dims"], width: int = 9,
          order: int = 1) -> Float[Array, "*batch frames dims"]:
    """Time derivative over frames, ``librosa.feature.delta(width, order, mode="interp")``.

    Needs ``frames >= width`` (librosa raises otherwise; here it is a trace-time error).
    """
    frames = features.shape[-2]
    if frames < width:
        raise ValueError(f"delta needs at least width={width} frames, got {frames}")
    taps = savgol_derivative_coeffs(width, order)
    half = width // 2
    interior = sum(float(taps[i]) * features[..., i:frames - width + 1 + i, :]
                   for i in range(width))
    pad = [(0, 0)] * (features.ndim - 2) + [(half, half), (0, 0)]
    return jnp.pad(interior, pad, mode="edge")


def centroid_from_mag(mag: Float[Array, "*batch frames bins"],
                      sample_rate: int) -> Float[Array, "*batch frames"]:
    """Per-frame spectral centroid in Hz (librosa.feature.spectral_centroid on magnitudes)."""
    n_fft = 2 * (mag.shape[-1] - 1)
    freqs_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate).astype(np.float32)
    # the weighted and the plain sum in one product: one pass over the magnitudes
    sums = mag @ np.stack([freqs_hz, np.ones_like(freqs_hz)], axis=1)
    return sums[..., 0] / jnp.maximum(sums[..., 1], 1e-30)


def spectral_centroid_hz(audio: Float[Array, "*batch samples"],
                         cfg: FeatureConfig) -> Float[Array, "*batch frames"]:
    """Per-frame centroid of the ``n_fft``/``hop_length`` STFT magnitude, in Hz.

    Magnitudes are floored at ``sqrt(mag_eps)`` (gradient safety); in a frame of pure digital
    silence this gives the mean bin frequency instead of librosa's 0 Hz.
    """
    power = stft_power(audio, cfg.n_fft, cfg.hop_length, cfg.pad_mode, cfg.dft)
    return centroid_from_mag(magnitude(power, cfg.mag_eps), cfg.sample_rate)


def loudness_gain_db(loudness: Float[Array, "*batch"], cfg: FeatureConfig) -> Float[Array, "*batch"]:
    """``loudness.loudness_gain_db`` with the reference and the clip of ``cfg``."""
    return _gain_to_reference_db(loudness, cfg.reference_lufs, cfg.max_gain_db)


def analyze(audio: Float[Array, "*batch samples"], cfg: FeatureConfig = FeatureConfig()) -> Features:
    """All matching features of a clip; spectral ones from the loudness-normalised clip.

    One STFT per resolution; the ``n_fft``/``hop_length`` one is shared by the loudness
    (``k_weighting="stft"``), log-mel, MFCC, centroid and the MR-STFT term at that resolution.
    Spectra are those of the loudness-normalised clip (the raw clip's power times the gain, or
    with ``"fir"``/``"scan"`` loudness the STFT of the scaled clip). A batch of more
    than ``cfg.batch_chunk`` clips is analysed in a ``lax.map`` over chunks of that size (the
    last one padded with silence); every clip's features are the same as analysed alone.
    """
    check_audio(audio, "analyze")
    if audio.shape[-1] != cfg.num_samples:
        raise ValueError(f"analyze: audio has {audio.shape[-1]} samples, FeatureConfig expects "
                         f"{cfg.num_samples} (sample_rate * duration_s); pad/trim or change cfg")
    lead, n = audio.shape[:-1], math.prod(audio.shape[:-1])
    if cfg.batch_chunk is None or n <= cfg.batch_chunk:
        return _analyze(audio, cfg)
    out = map_in_chunks(lambda clips: analyze_flat(clips, cfg), cfg.batch_chunk,
                        audio.reshape(n, audio.shape[-1]))
    return jax.tree.map(lambda f: f.reshape(*lead, *f.shape[1:]), out)


def map_in_chunks(fn, chunk: int, *batched):
    """``fn(*batched)`` for arrays (or pytrees of arrays) with one leading batch axis, computed
    as a ``lax.map`` over chunks of ``chunk`` rows (the last one padded with zeros, whose
    results are dropped): the same result as one call when ``fn`` treats rows independently,
    with temporaries ``chunk`` rows deep instead of the whole batch's."""
    n = jax.tree.leaves(batched)[0].shape[0]
    n_chunks = -(-n // chunk)
    pad = lambda x: jnp.pad(x, [(0, n_chunks * chunk - n)] + [(0, 0)] * (x.ndim - 1))
    split = lambda x: pad(x).reshape(n_chunks, chunk, *x.shape[1:])
    out = jax.lax.map(lambda xs: fn(*xs), jax.tree.map(split, batched))
    return jax.tree.map(lambda f: f.reshape(n_chunks * chunk, *f.shape[2:])[:n], out)


def analyze_flat(audio: Float[Array, "batch samples"], cfg: FeatureConfig) -> Features:
    """``analyze`` of one chunk of clips in one pass, without input checks (for callers that
    loop over chunks themselves inside jit, e.g. to compute a loss per chunk)."""
    return _analyze(audio, cfg)


def _analyze(audio: Float[Array, "*batch samples"], cfg: FeatureConfig) -> Features:
    resolutions = tuple(dict.fromkeys(((cfg.n_fft, cfg.hop_length),) + cfg.mrstft_resolutions))
    main = cfg.n_fft, cfg.hop_length
    stft = lambda x, n_fft, hop: _stft_power(x, n_fft, hop, cfg.pad_mode, cfg.dft)
    if cfg.loudness_from_stft:
        # the STFT is linear: spectra of the raw clip times the normalising power gain are the
        # spectra of the normalised clip. One product of the raw main spectrogram gives the
        # K-weighted frame energy (the loudness, as loudness_from_power), the mel-band power and
        # the frame energy; the last two are scaled by the gain afterwards (a per-clip constant)
        raw = {r: stft(audio, *r) for r in resolutions}
        bands = raw[main] @ main_band_matrix(cfg)
        loud = loudness_from_frame_energy(bands[..., cfg.n_mels + 1], cfg.num_samples, cfg.sample_rate,
                                          cfg.n_fft, cfg.hop_length, cfg.loudness_floor_lufs)
        gain_db = loudness_gain_db(loud, cfg)
        power_gain = (10.0 ** (gain_db / 10.0))[..., None, None]
        mel = bands[..., :cfg.n_mels] * power_gain
        energy = bands[..., cfg.n_mels] * power_gain[..., 0]
        mags = {r: magnitude(p * power_gain, cfg.mag_eps) for r, p in raw.items()}
    else:
        loud = _loudness_lufs(audio, cfg.sample_rate, cfg.loudness_floor_lufs,
                              "scan" if cfg.k_weighting == "scan" else "fir")
        gain_db = loudness_gain_db(loud, cfg)
        normalized = audio * (10.0 ** (gain_db / 20.0))[..., None]
        powers = {r: stft(normalized, *r) for r in resolutions}
        mel = mel_power(powers[main], cfg)
        energy = jnp.sum(powers[main], axis=-1)
        mags = {r: magnitude(p, cfg.mag_eps) for r, p in powers.items()}
    mel_db = power_to_db(mel, cfg.log_floor_db)
    return Features(
        log_mel=mel_db,
        mfcc=mfcc_from_log_mel(mel_db, cfg.n_mfcc),
        centroid_hz=centroid_from_mag(mags[main], cfg.sample_rate),
        frame_energy=energy,
        mrstft_mag=tuple(mags[r] for r in cfg.mrstft_resolutions),
        loudness_lufs=loud,
        gain_db=gain_db,
        peak=jnp.max(jnp.abs(audio), axis=-1),
        dc_offset=jnp.mean(audio, axis=-1),
        clip_fraction=jnp.mean((jnp.abs(audio) >= cfg.clip_level).astype(audio.dtype), axis=-1),
    )
