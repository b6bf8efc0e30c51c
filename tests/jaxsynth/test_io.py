"""Tests for jaxsynth/io.py against references we did not write.

References: scipy.signal.resample_poly for resampling, numpy for the mono mix, the FFT for a
tone's frequency, closed-form sine RMS for level, and soundfile itself only to *write* fixtures.
"""

from __future__ import annotations

import os
import warnings
from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf
import soxr
from scipy.signal import resample_poly

from jaxsynth import io as jio
from jaxsynth.io import AudioFileError, AudioWarning, load_audio, save_audio, validate_audio

SR = 22050
LSB16 = 1.0 / 32768  # one 16-bit step: soundfile scales PCM by 2**15 both ways


def tone(sample_rate, seconds=1.0, freq=440.0, amp=0.5, phase=0.0):
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return amp * np.sin(2 * np.pi * freq * t + phase)


def peak_hz(x, sample_rate):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spectrum) * sample_rate / len(x)


def rms_db(x):
    return 20 * np.log10(np.sqrt(np.mean(np.square(x))))


# ---------------------------------------------------------------- round trips

def test_float_wav_round_trip_is_exact(tmp_path):
    x = np.random.default_rng(0).uniform(-1, 1, 5000).astype(np.float32)
    path = tmp_path / "x.wav"
    save_audio(path, x, SR)
    assert sf.info(str(path)).subtype == "FLOAT"
    y = load_audio(path, SR)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("ext", [".wav", ".flac"])
def test_pcm16_round_trip_within_one_lsb(tmp_path, ext):
    # Tolerance 1/32768: rounding to the nearest 16-bit step costs at most half a step, and
    # +1.0 (included on purpose) has no int16 code, so it is clipped to 32767: one full step.
    x = np.random.default_rng(1).uniform(-1, 1, 5000).astype(np.float32)
    x[:3] = [1.0, -1.0, 0.0]
    path = tmp_path / f"x{ext}"
    save_audio(path, x, SR, subtype="PCM_16")
    assert sf.info(str(path)).subtype == "PCM_16"
    y = load_audio(path, SR)
    assert np.max(np.abs(y - x)) <= LSB16
    assert y[1] == -1.0 and y[2] == 0.0


def test_flac_default_is_24_bit_within_one_lsb(tmp_path):
    x = np.random.default_rng(2).uniform(-1, 1, 5000).astype(np.float32)
    path = tmp_path / "x.flac"
    save_audio(path, x, SR)
    assert sf.info(str(path)).subtype == "PCM_24"
    assert np.max(np.abs(load_audio(path, SR) - x)) <= 2.0 ** -23


def test_save_overwrites_existing_file(tmp_path):
    path = tmp_path / "x.wav"
    save_audio(path, np.full(100, 0.25, np.float32), SR)
    save_audio(path, np.full(50, -0.5, np.float32), SR)
    np.testing.assert_array_equal(load_audio(path, SR), np.full(50, -0.5, np.float32))
    assert os.listdir(tmp_path) == ["x.wav"]


def test_save_accepts_jax_arrays(tmp_path):
    import jax.numpy as jnp
    save_audio(tmp_path / "x.wav", jnp.linspace(-0.5, 0.5, 64), SR)
    np.testing.assert_allclose(load_audio(tmp_path / "x.wav", SR), np.linspace(-0.5, 0.5, 64),
                               atol=1e-7)


# ---------------------------------------------------------------- decode, mix, resample

def test_mono_mix_is_channel_mean(tmp_path):
    stereo = np.random.default_rng(3).uniform(-1, 1, (1000, 2)).astype(np.float32)
    sf.write(tmp_path / "s.wav", stereo, SR, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "s.wav", SR), stereo.mean(axis=1),
                               atol=1e-7)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
@pytest.mark.parametrize("file_rate", [8000, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2, 5])
def test_any_rate_depth_channels_to_mono_22050(tmp_path, subtype, file_rate, channels):
    # Each channel is a 440 Hz tone with its own level and phase, so the mean differs from
    # every single channel (and from their sum).
    amps = 0.2 + 0.1 * np.arange(channels)
    phases = 0.7 * np.arange(channels)
    data = np.stack([tone(file_rate, amp=a, phase=p) for a, p in zip(amps, phases)], axis=1)
    path = tmp_path / "tone.wav"
    sf.write(path, data, file_rate, subtype=subtype)

    y = load_audio(path, SR)
    assert y.dtype == np.float32 and y.shape == (SR,)  # 1 s at 22050 Hz

    ratio = Fraction(SR, file_rate)
    expected = resample_poly(data.mean(axis=1), ratio.numerator, ratio.denominator)
    assert expected.shape == y.shape
    # Away from the edges (where each resampler pads differently), two good band-limited
    # resamplers of a 440 Hz tone agree far better than 1e-3 (quantization adds <= 3e-5).
    edge = int(0.05 * SR)
    np.testing.assert_allclose(y[edge:-edge], expected[edge:-edge], atol=1e-3)
    # A sharper, exact reference: the same tones evaluated at the output sample times. soxr
    # VHQ meets it to float32 rounding (~1.5e-8 measured); the tolerance is that plus two
    # quantization steps of the file's depth (resampling filters the quantization noise).
    t_out = np.arange(SR) / SR
    exact = np.mean([a * np.sin(2 * np.pi * 440 * t_out + p) for a, p in zip(amps, phases)], 0)
    step = {"PCM_16": 2.0 ** -15, "PCM_24": 2.0 ** -23, "FLOAT": 0.0}[subtype]
    np.testing.assert_allclose(y[edge:-edge], exact[edge:-edge], atol=1e-6 + 2 * step)

    # Frequency: the FFT peak (1 Hz bins for 1 s) sits on 440 Hz within one bin.
    assert abs(peak_hz(y, SR) - 440.0) <= SR / len(y)
    # Level: the RMS of the mean tone (closed form |sum a e^{i phi}| / C / sqrt 2) within 0.1 dB.
    mix_amp = np.abs(np.sum(amps * np.exp(1j * phases))) / channels
    assert abs(rms_db(y[edge:-edge]) - 20 * np.log10(mix_amp / np.sqrt(2))) <= 0.1


@pytest.mark.parametrize("file_rate, alias_band", [
    (44100, (7000, 7100)),  # downsampling: a 15 kHz tone would fold to 22050 - 15000 = 7050 Hz
    (8000, (4000, SR // 2)),  # upsampling: images of 440 Hz would appear above 4 kHz
])
def test_resampling_is_band_limited(tmp_path, file_rate, alias_band):
    x = tone(file_rate) + (tone(file_rate, freq=15000, amp=0.3) if file_rate > 30000 else 0)
    sf.write(tmp_path / "x.wav", x, file_rate, subtype="FLOAT")
    y = load_audio(tmp_path / "x.wav", SR)
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    band_db = 20 * np.log10(spectrum[alias_band[0]:alias_band[1]].max() / spectrum.max())
    # -120 dB: far below anything a feature can see (soxr VHQ measures ~-170 dB here); keeping
    # every other sample gives -4 dB at 7050 Hz and linear interpolation images at -49 dB.
    assert band_db < -120


def test_ogg_vorbis_read(tmp_path):
    path = tmp_path / "tone.ogg"
    sf.write(path, tone(44100, amp=0.5), 44100, format="OGG", subtype="VORBIS")
    y = load_audio(path, SR)
    # Vorbis is lossy and adds encoder delay/padding: compare loosely.
    assert abs(len(y) - SR) <= 0.01 * SR
    assert abs(peak_hz(y, SR) - 440.0) <= SR / len(y)
    edge = int(0.05 * SR)
    assert abs(rms_db(y[edge:-edge]) - 20 * np.log10(0.5 / np.sqrt(2))) <= 1.0


# ---------------------------------------------------------------- trim / pad rule

def test_long_file_gives_first_num_samples(tmp_path):
    x = np.random.default_rng(4).uniform(-1, 1, 3000).astype(np.float32)
    sf.write(tmp_path / "x.wav", x, SR, subtype="FLOAT")
    y = load_audio(tmp_path / "x.wav", SR, num_samples=1000)
    np.testing.assert_array_equal(y, x[:1000])


def test_short_file_is_zero_padded_at_end(tmp_path):
    x = np.random.default_rng(5).uniform(-1, 1, 300).astype(np.float32)
    sf.write(tmp_path / "x.wav", x, SR, subtype="FLOAT")
    with pytest.warns(AudioWarning, match=r"only 300 samples.*zero-padded to 1000"):
        y = load_audio(tmp_path / "x.wav", SR, num_samples=1000)
    assert y.shape == (1000,) and y.dtype == np.float32
    np.testing.assert_array_equal(y[:300], x)
    np.testing.assert_array_equal(y[300:], 0.0)


def test_one_sample_file_warns_that_the_match_is_mostly_padding(tmp_path):
    sf.write(tmp_path / "one.wav", np.array([0.5], np.float32), SR, subtype="FLOAT")
    with pytest.warns(AudioWarning, match=r"one\.wav: only 1 samples \(0\.000 s\).*zero-padded "
                      r"to 11025 \(0\.500 s\).*longer recording or match a shorter duration"):
        y = load_audio(tmp_path / "one.wav", SR, num_samples=SR // 2)
    assert y.shape == (SR // 2,) and y[0] == 0.5


def test_file_over_half_the_length_does_not_warn(tmp_path):
    sf.write(tmp_path / "x.wav", tone(SR, seconds=0.3), SR, subtype="FLOAT")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_audio(tmp_path / "x.wav", SR, num_samples=SR // 2)


class CountingSoundFile(sf.SoundFile):
    """soundfile.SoundFile that counts the frames decoded by every instance."""

    decoded = 0

    def read(self, frames=-1, *args, **kwargs):
        out = super().read(frames, *args, **kwargs)
        CountingSoundFile.decoded += len(out)
        return out


@pytest.mark.parametrize("ext, file_rate", [(".wav", SR), (".wav", 44100), (".flac", 48000),
                                            (".ogg", 44100)])
def test_long_file_decodes_only_the_frames_needed(tmp_path, monkeypatch, ext, file_rate):
    """A 20 s stereo file matched over 0.5 s: decoding stops within one 65,536-frame block of
    the 0.5 s, and the result equals resampling the whole file."""
    seconds = 20.0
    x = np.random.default_rng(11).uniform(-0.5, 0.5, (int(seconds * file_rate), 2))
    path = tmp_path / f"long{ext}"
    sf.write(path, x.astype(np.float32), file_rate)
    whole, _ = sf.read(path, dtype="float64")
    expected = whole.mean(axis=1)
    if file_rate != SR:
        expected = soxr.resample(expected, file_rate, SR, quality=jio.RESAMPLE_QUALITY)
    expected = expected[:SR // 2].astype(np.float32)

    monkeypatch.setattr(jio.sf, "SoundFile", CountingSoundFile)
    CountingSoundFile.decoded = 0
    y = load_audio(path, SR, num_samples=SR // 2)
    needed = int(np.ceil(0.5 * file_rate))
    assert CountingSoundFile.decoded <= min(needed + 2**16, len(x) // 5)
    np.testing.assert_array_equal(y, expected)


def test_num_samples_counts_output_rate_samples_after_resampling(tmp_path):
    sf.write(tmp_path / "x.wav", tone(44100), 44100, subtype="FLOAT")
    full = load_audio(tmp_path / "x.wav", SR)
    np.testing.assert_array_equal(load_audio(tmp_path / "x.wav", SR, num_samples=5000),
                                  full[:5000])
    padded = load_audio(tmp_path / "x.wav", SR, num_samples=SR + 100)
    np.testing.assert_array_equal(padded[:SR], full)
    np.testing.assert_array_equal(padded[SR:], 0.0)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "22050", True])
def test_bad_rate_or_length_arguments(tmp_path, bad):
    sf.write(tmp_path / "x.wav", tone(SR), SR)
    with pytest.raises(ValueError, match="sample_rate must be a positive int"):
        load_audio(tmp_path / "x.wav", bad)
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        load_audio(tmp_path / "x.wav", SR, num_samples=bad)


# ---------------------------------------------------------------- bad files

def wav_bytes(tmp_path):
    sf.write(tmp_path / "good.wav", tone(SR, seconds=0.1), SR, subtype="PCM_16")
    return (tmp_path / "good.wav").read_bytes()


def load_error(path, match):
    with pytest.raises(AudioFileError, match=match) as info:
        load_audio(path, SR)
    assert str(path) in str(info.value)  # every message names the file
    return str(info.value)


def test_missing_file(tmp_path):
    load_error(tmp_path / "nope.wav", "file not found")


def test_directory(tmp_path):
    (tmp_path / "dir.wav").mkdir()
    load_error(tmp_path / "dir.wav", "is a directory, not an audio file")


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    load_error(tmp_path / "empty.wav", r"file is empty \(0 bytes\)")


def test_text_file_renamed_wav(tmp_path):
    (tmp_path / "notes.wav").write_text("these are my synth notes, not audio\n" * 20)
    msg = load_error(tmp_path / "notes.wav", "not an audio file: it holds text")
    assert "Format not recognised" in msg  # libsndfile's own reason is appended


def test_truncated_header(tmp_path):
    (tmp_path / "cut.wav").write_bytes(wav_bytes(tmp_path)[:30])
    load_error(tmp_path / "cut.wav", "corrupted or truncated WAV header")


def test_garbage_fmt_chunk(tmp_path):
    data = bytearray(wav_bytes(tmp_path))
    data[12:36] = np.random.default_rng(6).integers(0, 256, 24, dtype=np.uint8).tobytes()
    (tmp_path / "fmt.wav").write_bytes(bytes(data))
    load_error(tmp_path / "fmt.wav", "corrupted or truncated WAV header")


def test_garbage_riff_header(tmp_path):
    data = bytearray(wav_bytes(tmp_path))
    data[:44] = np.random.default_rng(7).integers(0, 256, 44, dtype=np.uint8).tobytes()
    (tmp_path / "riff.wav").write_bytes(bytes(data))
    msg = load_error(tmp_path / "riff.wav", "not a recognised audio file")
    assert "header is corrupted" in msg and "Format not recognised" in msg


def test_truncated_flac(tmp_path):
    sf.write(tmp_path / "good.flac", tone(SR, seconds=0.1), SR)
    (tmp_path / "cut.flac").write_bytes((tmp_path / "good.flac").read_bytes()[:20])
    load_error(tmp_path / "cut.flac", "corrupted or truncated FLAC header")


def test_unsupported_extension(tmp_path):
    (tmp_path / "x.xyz").write_bytes(np.random.default_rng(8).bytes(1000))
    load_error(tmp_path / "x.xyz", r"unsupported audio file \(extension '.xyz'\)")
    (tmp_path / "noext").write_bytes(wav_bytes(tmp_path))
    load_error(tmp_path / "noext", r"unsupported audio file \(no file extension\)")


def test_zero_frames(tmp_path):
    sf.write(tmp_path / "none.wav", np.zeros(0), SR)
    load_error(tmp_path / "none.wav", "contains no audio frames")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_in_float_wav(tmp_path, bad):
    x = tone(SR, seconds=0.1)
    x[7] = bad
    sf.write(tmp_path / "nan.wav", x, SR, subtype="FLOAT")
    load_error(tmp_path / "nan.wav", r"contains 1 NaN/Inf samples \(first at frame 7")


def test_error_class_is_value_error():
    assert issubclass(AudioFileError, ValueError)
    assert issubclass(AudioWarning, UserWarning)


# ---------------------------------------------------------------- save errors and atomicity

def test_save_rejects_other_extensions(tmp_path):
    for name in ["x.mp3", "x.ogg", "x"]:
        with pytest.raises(AudioFileError, match="cannot save audio with") as info:
            save_audio(tmp_path / name, np.zeros(10, np.float32), SR)
        assert str(tmp_path / name) in str(info.value)
    assert os.listdir(tmp_path) == []


def test_save_nan_raises_and_leaves_existing_file_untouched(tmp_path):
    path = tmp_path / "keep.wav"
    save_audio(path, tone(SR, seconds=0.1), SR)
    before = path.read_bytes()
    x = np.zeros(100, np.float32)
    x[10] = np.nan
    with pytest.raises(AudioFileError, match="NaN/Inf.*Nothing was written") as info:
        save_audio(path, x, SR)
    assert str(path) in str(info.value)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["keep.wav"]


def test_failed_write_leaves_existing_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "keep.wav"
    save_audio(path, tone(SR, seconds=0.1), SR)
    before = path.read_bytes()

    def half_write(file, *args, **kwargs):  # a crash after part of the file was written
        with open(file, "wb") as f:
            f.write(b"RIFF\x00\x00")
        raise RuntimeError("Error writing file: disk full")

    monkeypatch.setattr(jio.sf, "write", half_write)
    with pytest.raises(AudioFileError, match="disk full.*existing file is unchanged"):
        save_audio(path, np.zeros(100, np.float32), SR)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["keep.wav"]


def test_save_clips_with_warning(tmp_path):
    x = np.array([0.0, 1.5, -2.0, 0.5], np.float32)
    with pytest.warns(AudioWarning, match="2 samples exceed full scale.*clipped"):
        save_audio(tmp_path / "c.wav", x, SR)
    np.testing.assert_array_equal(load_audio(tmp_path / "c.wav", SR), [0.0, 1.0, -1.0, 0.5])


@pytest.mark.parametrize("audio, match", [
    (np.zeros(10, np.int16), "floating-point.*x / 32768"),
    (np.zeros((2, 10), np.float32), "must be 1-D"),
    (np.zeros(0, np.float32), "empty"),
])
def test_save_rejects_bad_arrays(tmp_path, audio, match):
    with pytest.raises(AudioFileError, match=match):
        save_audio(tmp_path / "x.wav", audio, SR)
    assert os.listdir(tmp_path) == []


def test_save_bad_subtype_and_missing_directory(tmp_path):
    with pytest.raises(AudioFileError, match="'FLOAT' is not valid for FLAC"):
        save_audio(tmp_path / "x.flac", np.zeros(10, np.float32), SR, subtype="FLOAT")
    with pytest.raises(AudioFileError, match="does not exist; create it first"):
        save_audio(tmp_path / "no" / "x.wav", np.zeros(10, np.float32), SR)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- silence

def test_silent_file_returns_zeros_and_warns(tmp_path):
    sf.write(tmp_path / "z.wav", np.zeros(500), SR, subtype="PCM_16")
    with pytest.warns(AudioWarning, match="silent.*all zeros"):
        y = load_audio(tmp_path / "z.wav", SR, num_samples=1000)
    np.testing.assert_array_equal(y, np.zeros(1000, np.float32))


def test_quiet_threshold_is_minus_90_dbfs(tmp_path):
    sf.write(tmp_path / "q.wav", tone(SR, amp=10 ** (-100 / 20)), SR, subtype="FLOAT")
    with pytest.warns(AudioWarning, match="silent"):
        load_audio(tmp_path / "q.wav", SR)
    sf.write(tmp_path / "ok.wav", tone(SR, amp=10 ** (-80 / 20)), SR, subtype="FLOAT")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_audio(tmp_path / "ok.wav", SR)


def test_silent_window_before_late_onset_warns(tmp_path):
    x = np.concatenate([np.zeros(2000), tone(SR, seconds=0.1)])
    sf.write(tmp_path / "late.wav", x, SR, subtype="FLOAT")
    with pytest.warns(AudioWarning, match="silent in its first 1000 samples"):
        load_audio(tmp_path / "late.wav", SR, num_samples=1000)


# ---------------------------------------------------------------- validate_audio

def test_validate_audio_accepts_and_converts():
    import jax.numpy as jnp
    y = validate_audio(jnp.ones(8), num_samples=8)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == (8,)
    assert validate_audio(np.ones(8, np.float64)).dtype == np.float32


@pytest.mark.parametrize("audio, kwargs, match", [
    (np.ones((2, 8)), {}, r"must be 1-D .*got shape \(2, 8\)"),
    (np.ones(8, np.int32), {}, "floating-point"),
    (np.array([0.0, np.nan, np.inf]), {}, r"2 NaN/Inf samples \(first at index 1\)"),
    (np.ones(0), {}, "empty"),
    (np.ones(8), {"num_samples": 10}, "has 8 samples, expected exactly 10"),
])
def test_validate_audio_rejects(audio, kwargs, match):
    with pytest.raises(ValueError, match=match):
        validate_audio(audio, **kwargs)


# ---------------------------------------------------------------- atomic writes

def test_atomic_write_text_is_utf8_and_bytes_exact(tmp_path):
    jio.atomic_write(tmp_path / "t.txt", "über\n")
    assert (tmp_path / "t.txt").read_bytes() == "über\n".encode("utf-8")
    jio.atomic_write(tmp_path / "t.txt", b"\x00\xff")
    assert (tmp_path / "t.txt").read_bytes() == b"\x00\xff"
    assert os.listdir(tmp_path) == ["t.txt"]


def test_atomic_write_rejects_other_types(tmp_path):
    with pytest.raises(TypeError, match="bytes or str"):
        jio.atomic_write(tmp_path / "t.txt", 3)
    assert os.listdir(tmp_path) == []


def test_atomic_write_gives_normal_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        jio.atomic_write(tmp_path / "t.txt", "x")
    finally:
        os.umask(umask)
    assert (os.stat(tmp_path / "t.txt").st_mode & 0o777) == 0o644


def test_atomic_path_keeps_extension_and_is_unique(tmp_path):
    target = tmp_path / "a.npz"
    with jio.atomic_path(target) as t1, jio.atomic_path(target) as t2:
        assert t1 != t2 and os.path.dirname(t1) == str(tmp_path)
        assert t1.endswith(".npz") and os.path.basename(t1).startswith(".a.npz.")
        np.savez(t1, x=np.arange(3))  # np.savez would append .npz to any other name
        np.savez(t2, x=np.arange(4))
    # t2 is replaced first, t1 last: the last writer wins, whole.
    np.testing.assert_array_equal(np.load(target)["x"], np.arange(3))
    assert os.listdir(tmp_path) == ["a.npz"]


def test_atomic_path_error_removes_temp_and_keeps_old_file(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with jio.atomic_path(target) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["keep.txt"]


def test_atomic_write_never_writes_through_a_planted_symlink(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "out.json"
    # Every name a fixed-suffix writer could use, planted as a symlink to the victim.
    for name in ("out.json.tmp", ".out.json.tmp", "out.json.tmp.json"):
        os.symlink(victim, tmp_path / name)
    jio.atomic_write(target, "new")
    assert victim.read_text() == "precious"
    assert target.read_text() == "new" and not target.is_symlink()


# ---------------------------------------------------------------- output folders

def test_check_output_dir_accepts_existing_and_creatable_folders_and_leaves_nothing(tmp_path):
    assert jio.check_output_dir(tmp_path) == str(tmp_path)
    assert jio.check_output_dir(tmp_path / "new" / "deeper") == str(tmp_path / "new" / "deeper")
    assert os.listdir(tmp_path) == []


def test_check_output_dir_rejects_a_file_and_a_path_under_a_file(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(jio.OutputPathError, match=r"f\.txt: is a file, not a folder"):
        jio.check_output_dir(tmp_path / "f.txt")
    with pytest.raises(jio.OutputPathError, match=r"cannot be created because .*f\.txt is a file"):
        jio.check_output_dir(tmp_path / "f.txt" / "out")
    assert os.listdir(tmp_path) == ["f.txt"]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_check_output_dir_rejects_an_unwritable_place():
    with pytest.raises(jio.OutputPathError, match=r"/proc/x: cannot write there.*choose a folder"):
        jio.check_output_dir("/proc/x")
