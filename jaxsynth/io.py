"""Audio files in and out: the only file I/O in ``jaxsynth``.

``load_audio`` turns any WAV/FLAC/OGG file (any sample rate, bit depth, channel count) into
the one thing the pipeline consumes: a mono float32 vector at the analysis sample rate with a
fixed length. ``save_audio`` writes WAV or FLAC atomically. Every problem with a file is an
``AudioFileError`` whose message names the path, what is wrong and what to do about it, so a
CLI can print it as is. Decoding is libsndfile's (via ``soundfile``); resampling is soxr's.

``atomic_write`` and ``atomic_path`` are the project's one way to replace a file atomically:
a reader or a crash sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import operator
import os
import secrets
import tempfile
import warnings
from collections.abc import Iterator

import numpy as np
import soundfile as sf
import soxr
from jaxtyping import Float

READ_EXTENSIONS = (".wav", ".flac", ".ogg")
WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}
# WAV keeps float32 exactly; FLAC has no float subtype, and 24 bits is its finest lossless one.
DEFAULT_SUBTYPES = {"WAV": "FLOAT", "FLAC": "PCM_24"}
SILENCE_DBFS = -90.0  # just below one 16-bit LSB (-90.3 dBFS): nothing a 16-bit file can carry
RESAMPLE_QUALITY = "VHQ"
READ_BLOCK_FRAMES = 1 << 16  # decoded per step: 1 MiB of float64 stereo
SHORT_FRACTION = 0.5  # a file under this fraction of the requested length is mostly padding


def _fsync_dir(directory: str) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some filesystems cannot fsync a directory
            os.fsync(fd)
    finally:
        os.close(fd)


def _create_temp(path: str) -> str:
    """Create (exclusively, so never through a planted file or symlink) an empty temporary
    file beside ``path`` with the same extension, and return its name.

    The mode is 0o666 less the umask, as ``open()`` gives, so the final file has the user's
    normal permissions (``tempfile.mkstemp`` would make it 0o600).
    """
    directory, name = os.path.split(os.path.abspath(path))
    ext = os.path.splitext(name)[1]
    for _ in range(100):
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}{ext}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                         0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a unique temporary file beside {path}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a fresh temporary path beside ``path``; on normal exit it replaces ``path``.

    The temporary file is created exclusively in the same folder (so the final rename is
    atomic and a planted file or symlink is never written through) with the same extension
    as ``path``, so writers that infer the format from the name (soundfile, ``np.savez``,
    matplotlib) behave as for ``path``. On normal exit its data is fsynced and
    ``os.replace``-d onto ``path``; on any error it is removed and ``path`` is unchanged.
    """
    path = os.fspath(path)
    tmp = _create_temp(path)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` atomically (text is written as UTF-8)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    elif not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"atomic_write takes bytes or str, got {type(data).__name__}")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes, read in 1 MiB blocks (integrity records, caches)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class OutputPathError(ValueError):
    """An output folder that cannot be created or written; the message says what to do."""


def check_output_dir(path: str | os.PathLike) -> str:
    """Check, before any work is done, that ``path`` is a folder this process can write to,
    or can be created as one; returns its absolute path.

    The check is real, not ``os.access``: a probe file (or folder, where ``path`` does not
    exist yet) is created and removed again, so nothing stays behind. Raises
    ``OutputPathError`` naming the path, why it fails and what to do.
    """
    out = os.path.abspath(os.fspath(path))
    if os.path.exists(out) and not os.path.isdir(out):
        raise OutputPathError(f"{out}: is a file, not a folder; give --out a folder path "
                              "(it is created if missing)")
    existing = out
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise OutputPathError(f"{out}: cannot be created because {existing} is a file, not a "
                              "folder; choose another --out")
    try:
        if existing == out:
            os.remove(_create_temp(os.path.join(out, "write-probe")))
        else:
            os.rmdir(tempfile.mkdtemp(prefix=".write-probe.", dir=existing))
    except OSError as e:
        where = "" if existing == out else f" (its nearest existing parent is {existing})"
        raise OutputPathError(f"{out}: cannot write there{where}: {e.strerror or e}; choose a "
                              "folder you can write to with --out") from None
    return out


class AudioFileError(ValueError):
    """An audio file (or an array bound for one) that cannot be used.

    The message names the path, what is wrong and what to do, so a CLI can print it as is.
    """


class AudioWarning(UserWarning):
    """Audio that is usable but probably not what was meant (silent, clipped on save)."""


def _positive_int(value, name: str) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a positive int, got {value!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


def validate_audio(audio, num_samples: int | None = None) -> Float[np.ndarray, "samples"]:
    """Check an in-memory mono signal at the public boundary and return it as float32.

    Accepts NumPy or JAX arrays. Requires 1-D, real floating point (integer PCM would silently
    be 32768x too loud), non-empty, finite, and exactly ``num_samples`` long when given.
    Amplitude is not limited here (``save_audio`` clips with a warning). Raises ``ValueError``.
    """
    x = np.asarray(audio)
    if not np.issubdtype(x.dtype, np.floating):
        hint = ("; scale integer PCM to [-1, 1] first (e.g. x / 32768 for int16)"
                if np.issubdtype(x.dtype, np.integer) else "")
        raise ValueError(f"audio must be a floating-point array, got dtype {x.dtype}{hint}")
    if x.ndim != 1:
        raise ValueError(f"audio must be 1-D (mono samples), got shape {x.shape}; "
                         "mix channels to mono first (e.g. x.mean(axis=0) for (channels, samples))")
    if x.size == 0:
        raise ValueError("audio is empty (0 samples); there is nothing to use")
    bad = ~np.isfinite(x)
    if bad.any():
        raise ValueError(f"audio contains {int(bad.sum())} NaN/Inf samples (first at index "
                         f"{int(np.argmax(bad))}); fix the producer or replace them "
                         "(e.g. numpy.nan_to_num)")
    if num_samples is not None:
        num_samples = _positive_int(num_samples, "num_samples")
        if x.shape[0] != num_samples:
            raise ValueError(f"audio has {x.shape[0]} samples, expected exactly {num_samples}; "
                             "trim or zero-pad it (load_audio does this for files)")
    return x.astype(np.float32, copy=False)


def _sniff(path: str) -> tuple[bytes, str | None]:
    """First bytes of the file and the container they announce (None if none we read)."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:4] in (b"RIFF", b"RIFX", b"RF64", b"BW64"):
        return head, "WAV"
    if head[:4] == b"fLaC":
        return head, "FLAC"
    if head[:4] == b"OggS":
        return head, "OGG"
    return head, None


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    printable = sum(b in (9, 10, 13) or 32 <= b < 127 or b >= 128 for b in head)
    return printable >= 0.95 * len(head)


def _decode_error(path: str, ext: str, err: Exception) -> AudioFileError:
    """Turn libsndfile's terse failure into a message that says what the file is and what to do."""
    reason = (getattr(err, "error_string", None) or str(err)).strip()
    size = os.path.getsize(path)
    head, container = _sniff(path)
    if container is not None:
        return AudioFileError(
            f"{path}: corrupted or truncated {container} header ({size} bytes on disk); the "
            f"file cannot be decoded. Re-export or re-download it. (libsndfile: {reason})")
    if _looks_like_text(head):
        start = head[:40].decode("utf-8", errors="replace")
        return AudioFileError(
            f"{path}: not an audio file: it holds text (starts with {start!r}), not a "
            f"{ext.upper()[1:]} stream. Pass a WAV, FLAC or OGG recording. (libsndfile: {reason})")
    return AudioFileError(
        f"{path}: not a recognised audio file: its first bytes ({head[:12].hex(' ')}) are not "
        f"a WAV, FLAC or OGG header. The header is corrupted or the file is another format "
        f"renamed to {ext}; re-export it as WAV or FLAC. (libsndfile: {reason})")


def _check_readable(path: str) -> str:
    """The existence/kind/extension/size checks, in the order a user would want them reported."""
    if not os.path.exists(path):
        raise AudioFileError(f"{path}: file not found. Check the path (relative paths are "
                             f"resolved from {os.getcwd()}).")
    if os.path.isdir(path):
        raise AudioFileError(f"{path}: is a directory, not an audio file. Pass the path of a "
                             ".wav, .flac or .ogg file.")
    ext = os.path.splitext(path)[1].lower()
    if ext not in READ_EXTENSIONS:
        what = f"extension '{ext}'" if ext else "no file extension"
        raise AudioFileError(f"{path}: unsupported audio file ({what}). load_audio reads "
                             f"{', '.join(READ_EXTENSIONS)}; convert it first "
                             f"(e.g. `ffmpeg -i {os.path.basename(path)} out.wav`).")
    if os.path.getsize(path) == 0:
        raise AudioFileError(f"{path}: file is empty (0 bytes) and holds no audio; it was "
                             "probably cut short while being written or copied. Re-export it.")
    return ext


def _read_block(f: sf.SoundFile, frames: int, path: str, ext: str) -> np.ndarray:
    try:
        return f.read(frames, dtype="float64", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as err:
        raise _decode_error(path, ext, err) from err


def _check_finite(block: np.ndarray, offset: int, file_rate: int, path: str) -> None:
    bad = ~np.isfinite(block)
    if bad.any():
        first = offset + int(np.argmax(bad.any(axis=1)))
        raise AudioFileError(f"{path}: contains {int(bad.sum())} NaN/Inf samples (first at frame "
                             f"{first}, {first / file_rate:.3f} s); such a float file cannot be "
                             "analysed. Fix the program that wrote it, or replace the values "
                             "(e.g. numpy.nan_to_num) and save it again.")


def _decode_mono(path: str, ext: str, sample_rate: int,
                 num_samples: int | None) -> tuple[np.ndarray, int, int, int]:
    """Decode block by block into mono float64 at ``sample_rate``, stopping as soon as
    ``num_samples`` output samples exist (all of the file when None).

    Memory is one block plus the output, whatever the file's length. Resampling streams
    through soxr, whose output does not depend on the block boundaries (identical to resampling
    the whole file at once), and stops before the flush, so the first ``num_samples`` are the
    same as from the whole file. Returns (mono, frames decoded, file rate, channels).
    """
    try:
        f = sf.SoundFile(path)
    except (sf.SoundFileError, RuntimeError) as err:
        raise _decode_error(path, ext, err) from err
    with f:
        file_rate, channels = f.samplerate, f.channels
        stream = (None if file_rate == sample_rate else
                  soxr.ResampleStream(file_rate, sample_rate, 1, dtype="float64",
                                      quality=RESAMPLE_QUALITY))
        parts, have, frames = [], 0, 0
        while num_samples is None or have < num_samples:
            want = READ_BLOCK_FRAMES
            if stream is None and num_samples is not None:
                want = min(want, num_samples - have)
            block = _read_block(f, want, path, ext)
            _check_finite(block, frames, file_rate, path)
            frames += block.shape[0]
            mono = block.mean(axis=1)
            if stream is not None:
                mono = stream.resample_chunk(mono, last=block.shape[0] == 0)
            parts.append(mono)
            have += mono.size
            if block.shape[0] == 0:
                break
    return np.concatenate(parts), frames, file_rate, channels


def load_audio(path: str | os.PathLike, sample_rate: int,
               num_samples: int | None = None) -> Float[np.ndarray, "samples"]:
    """Read an audio file as mono float32 at ``sample_rate``, optionally of fixed length.

    Steps, in order: decode (WAV/FLAC/OGG; 16/24/32-bit int or float; integer PCM is scaled by
    1/2**(bits-1) into [-1, 1)); mix to mono as the mean of the channels; resample from the
    file's rate to ``sample_rate``; trim or pad to ``num_samples``. Float files that exceed
    full scale are returned as they are, not clipped.

    Resampling uses soxr (``RESAMPLE_QUALITY = "VHQ"``): a band-limited resampler whose alias
    and imaging rejection (~170 dB, 28-bit precision) lies below float32 resolution (~-138 dB),
    so the resampler never shows up in a spectral loss; 'HQ' (20-bit, ~-120 dB) would be above
    it, and the extra cost is negligible for loading a file once.

    Trim/pad rule: the result is the **first** ``num_samples`` samples (after resampling) from
    the start of the file, because sound matching needs a note's onset; a shorter file is
    zero-padded at the end. No onset detection or silence trimming is done, so the result
    is predictable: sample 0 of the file is sample 0 of the result. With ``num_samples=None``
    the natural length (about frames * sample_rate / file_rate) is returned. Only the frames
    needed for ``num_samples`` are decoded (plus the resampler's look-ahead), block by block, so
    a 20-minute file costs no more memory than a 1-second one; NaN/Inf are looked for in those
    frames only.

    Warns ``AudioWarning`` (and still returns the audio) when the result is silent: peak below
    ``SILENCE_DBFS`` (-90 dBFS), or when the file gives less than ``SHORT_FRACTION`` (half) of
    ``num_samples``, so that the rest is zero padding. Raises ``AudioFileError`` for any
    unusable file.
    """
    path = os.fspath(path)
    sample_rate = _positive_int(sample_rate, "sample_rate")
    if num_samples is not None:
        num_samples = _positive_int(num_samples, "num_samples")
    ext = _check_readable(path)

    mono, frames, file_rate, channels = _decode_mono(path, ext, sample_rate, num_samples)
    if frames == 0:
        raise AudioFileError(f"{path}: contains no audio frames (a readable header but 0 "
                             "samples); the recording was cut off or never made. Re-export it.")
    if mono.size == 0:
        raise AudioFileError(f"{path}: too short to resample: {frames} frame(s) at "
                             f"{file_rate} Hz give no sample at {sample_rate} Hz.")
    if num_samples is not None:
        mono = mono[:num_samples]
        if mono.size < SHORT_FRACTION * num_samples:
            warnings.warn(f"{path}: only {mono.size} samples ({mono.size / sample_rate:.3f} s) "
                          f"of audio, zero-padded to {num_samples} ({num_samples / sample_rate:.3f}"
                          " s); most of the match will be against silence. Use a longer "
                          "recording or match a shorter duration.", AudioWarning, stacklevel=2)
        if mono.size < num_samples:
            mono = np.pad(mono, (0, num_samples - mono.size))
    audio = mono.astype(np.float32)

    peak = float(np.max(np.abs(audio)))
    if peak == 0.0 or 20.0 * np.log10(peak) < SILENCE_DBFS:
        level = "all zeros" if peak == 0.0 else f"peak {20.0 * np.log10(peak):.1f} dBFS"
        window = f" in its first {num_samples} samples" if num_samples is not None else ""
        warnings.warn(f"{path}: audio is silent{window} ({level}, below {SILENCE_DBFS:g} dBFS "
                      f"after mixing {channels} channel(s) to mono); a match against it is "
                      "meaningless. Check the file, its channels, or where the note starts.",
                      AudioWarning, stacklevel=2)
    return audio


def save_audio(path: str | os.PathLike, audio, sample_rate: int,
               subtype: str | None = None) -> None:
    """Write mono audio to ``.wav`` or ``.flac`` (chosen by extension), atomically.

    ``subtype`` is a soundfile subtype ('PCM_16', 'PCM_24', 'FLOAT', ...); by default WAV is
    written as 32-bit float (exact) and FLAC as 24-bit PCM (its finest lossless depth).
    Samples beyond [-1, 1] are clipped with an ``AudioWarning``; NaN/Inf raise
    ``AudioFileError`` and nothing is written. The data goes to a temporary file in the same
    directory that then replaces ``path`` with ``os.replace``, so a reader (or a crash) never
    sees a half-written file and an existing file survives any failure intact.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    fmt = WRITE_FORMATS.get(ext)
    if fmt is None:
        what = f"extension '{ext}'" if ext else "no file extension"
        raise AudioFileError(f"{path}: cannot save audio with {what}; save_audio writes "
                             f"{' or '.join(WRITE_FORMATS)}. Choose one of those extensions.")
    try:
        sample_rate = _positive_int(sample_rate, "sample_rate")
        x = validate_audio(audio)
    except ValueError as err:
        raise AudioFileError(f"{path}: cannot save: {err}. Nothing was written.") from None
    subtype = DEFAULT_SUBTYPES[fmt] if subtype is None else str(subtype).upper()
    if not sf.check_format(fmt, subtype):
        raise AudioFileError(f"{path}: subtype {subtype!r} is not valid for {fmt}; use one of "
                             f"{sorted(sf.available_subtypes(fmt))}.")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise AudioFileError(f"{path}: directory {directory} does not exist; create it first.")
    if os.path.isdir(path):
        raise AudioFileError(f"{path}: is a directory; give a file name ending in {ext}.")

    over = np.abs(x) > 1.0
    if over.any():
        peak = float(np.max(np.abs(x)))
        warnings.warn(f"{path}: {int(over.sum())} samples exceed full scale (peak {peak:.3f} = "
                      f"{20.0 * np.log10(peak):+.1f} dBFS) and were clipped to [-1, 1]; "
                      "normalize the audio before saving to avoid distortion.",
                      AudioWarning, stacklevel=2)
        x = np.clip(x, -1.0, 1.0)

    try:
        with atomic_path(path) as tmp:
            sf.write(tmp, x, sample_rate, format=fmt, subtype=subtype)
    except (sf.SoundFileError, RuntimeError, OSError, ValueError) as err:
        reason = (getattr(err, "error_string", None) or str(err)).strip()
        raise AudioFileError(f"{path}: could not write {fmt} ({subtype}) at {sample_rate} "
                             f"Hz: {reason}. Any existing file is unchanged.") from err
