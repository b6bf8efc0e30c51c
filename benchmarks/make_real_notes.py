"""Build a development set of real sampled-instrument notes with a known played pitch.

``python benchmarks/make_real_notes.py [--out DIR]`` renders single notes of General MIDI
instruments with the ``fluidsynth`` command-line synthesizer from several soundfonts (sample
sets recorded from real instruments), so that pitch estimation and matching are measured on
sounds that our synth did not make, and nothing is tuned to one sample set.

Install on Debian/Ubuntu (all from the main archive)::

    apt-get update
    apt-get install -y fluidsynth fluid-soundfont-gm musescore-general-soundfont-small timgm6mb-soundfont

What it writes under ``--out`` (default ``runs/real_notes``, ignored by git; no audio is
committed, the script rebuilds the same files):

* ``{soundfont}__{instrument}__{note}_m{midi}.wav``: 22.05 kHz mono 16-bit, ``--duration-s``
  long (0.5 s), the note held for ``--held-s`` (0.35 s, 70 % of the clip, the synth's default
  note length) and then released; starting at the note's onset; peak-normalised to -6 dBFS.
* ``notes.csv``: ``file, midi_note, f0_hz, note_name, instrument, family, program, soundfont,
  split``: the played note (equal temperament, A4 = 440 Hz) and the half it belongs to.

Instruments come in pairs per family (keys, organ, plucked, bowed, brass, reeds, pipes, synth
leads, synth pads, choir, ethnic); the first of each pair is in ``dev``, the second in
``test``, so anything tuned on ``dev`` is checked on instruments it never saw. Notes are D, F#
and A in three octaves chosen inside each instrument's range (not only C). Reverb and chorus
are off (chorus modulates pitch); MIDI is written by hand (standard MIDI file, format 0), so
the only dependencies are fluidsynth and soundfile. Deterministic: fluidsynth renders to float
with no dither and this script rounds to 16 bit itself.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 22050
NOTE_NAMES = ("C", "Cs", "D", "Ds", "E", "F", "Fs", "G", "Gs", "A", "As", "B")
PITCH_CLASSES = (2, 6, 9)  # D, F#, A
TICKS_PER_BEAT = 480
TEMPO_US_PER_BEAT = 500_000  # 120 bpm: one tick = 1/960 s
PEAK = 0.5  # -6 dBFS

# (soundfont name, candidate paths): the Debian packages above install these.
SOUNDFONTS = (
    ("fluidr3", ("/usr/share/sounds/sf2/FluidR3_GM.sf2",)),
    ("musescore", ("/usr/share/sounds/sf3/MuseScore_General_Lite.sf3",
                   "/usr/share/sounds/sf3/MuseScore_General.sf3")),
    ("timgm6mb", ("/usr/share/sounds/sf2/TimGM6mb.sf2",)),
)


@dataclass(frozen=True)
class Instrument:
    name: str
    family: str
    program: int  # General MIDI program, 0-based
    low_octave: int  # notes D, F#, A in octaves low_octave .. low_octave + 2 (C4 = MIDI 60)
    split: str


INSTRUMENTS = (
    Instrument("piano", "keys", 0, 3, "dev"),
    Instrument("epiano", "keys", 4, 3, "test"),
    Instrument("drawbar_organ", "organ", 16, 3, "dev"),
    Instrument("church_organ", "organ", 19, 2, "test"),
    Instrument("nylon_guitar", "plucked", 24, 3, "dev"),
    Instrument("harp", "plucked", 46, 3, "test"),
    Instrument("violin", "bowed", 40, 4, "dev"),
    Instrument("cello", "bowed", 42, 2, "test"),
    Instrument("trumpet", "brass", 56, 3, "dev"),
    Instrument("french_horn", "brass", 60, 2, "test"),
    Instrument("clarinet", "reeds", 71, 3, "dev"),
    Instrument("alto_sax", "reeds", 65, 3, "test"),
    Instrument("flute", "pipes", 73, 4, "dev"),
    Instrument("recorder", "pipes", 74, 4, "test"),
    Instrument("square_lead", "synth_lead", 80, 3, "dev"),
    Instrument("saw_lead", "synth_lead", 81, 3, "test"),
    Instrument("warm_pad", "synth_pad", 89, 3, "dev"),
    Instrument("polysynth_pad", "synth_pad", 90, 3, "test"),
    Instrument("choir_aahs", "choir", 52, 3, "dev"),
    Instrument("voice_oohs", "choir", 53, 3, "test"),
    Instrument("sitar", "ethnic", 104, 3, "dev"),
    Instrument("banjo", "ethnic", 105, 3, "test"),
)


def midi_to_hz(midi_note: int) -> float:
    return 440.0 * 2.0 ** ((midi_note - 69) / 12.0)


def note_name(midi_note: int) -> str:
    """MIDI 66 -> 'Fs4' (sharps as 's', octave with C4 = 60)."""
    return f"{NOTE_NAMES[midi_note % 12]}{midi_note // 12 - 1}"


def instrument_notes(instrument: Instrument) -> list[int]:
    return [12 * (octave + 1) + pc for octave in range(instrument.low_octave, instrument.low_octave + 3)
            for pc in PITCH_CLASSES]


def _vlq(value: int) -> bytes:
    """MIDI variable-length quantity."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def notes_midi_file(program: int, midi_notes: list[int], held_s: float, spacing_s: float,
                    velocity: int = 100) -> bytes:
    """A standard MIDI file (format 0): the notes one after another, each ``held_s`` long and
    starting every ``spacing_s``, on channel 1 with the reverb and chorus sends at 0."""
    ticks_per_s = TICKS_PER_BEAT * 1e6 / TEMPO_US_PER_BEAT
    held = int(round(held_s * ticks_per_s))
    rest = int(round(spacing_s * ticks_per_s)) - held
    events = [_vlq(0) + b"\xff\x51\x03" + TEMPO_US_PER_BEAT.to_bytes(3, "big"),
              _vlq(0) + bytes([0xC0, program]),
              _vlq(0) + bytes([0xB0, 91, 0]),  # reverb send
              _vlq(0) + bytes([0xB0, 93, 0])]  # chorus send
    for i, note in enumerate(midi_notes):
        events.append(_vlq(0 if i == 0 else rest) + bytes([0x90, note, velocity]))
        events.append(_vlq(held) + bytes([0x80, note, 0]))
    events.append(_vlq(rest) + b"\xff\x2f\x00")
    track = b"".join(events)
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS_PER_BEAT)
    return header + b"MTrk" + struct.pack(">I", len(track)) + track


def render_midi(fluidsynth: str, soundfont: str, midi_bytes: bytes, workdir: str) -> np.ndarray:
    """Render a MIDI file with the fluidsynth CLI (fast render, float, no reverb/chorus) -> mono."""
    import soundfile as sf

    mid = os.path.join(workdir, "notes.mid")
    wav = os.path.join(workdir, "notes.wav")
    with open(mid, "wb") as f:
        f.write(midi_bytes)
    cmd = [fluidsynth, "-n", "-i", "-q", "-R", "0", "-C", "0", "-g", "0.5", "-r", str(SAMPLE_RATE),
           "-T", "wav", "-O", "float", "-F", wav, soundfont, mid]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
    audio, sr = sf.read(wav, dtype="float64", always_2d=True)
    if sr != SAMPLE_RATE:
        raise RuntimeError(f"fluidsynth wrote {sr} Hz, asked for {SAMPLE_RATE}")
    return audio.mean(axis=1)


def clip_from_onset(audio: np.ndarray, num_samples: int, onset_db: float = -40.0) -> np.ndarray | None:
    """The ``num_samples`` from 2 ms before the first sample within ``onset_db`` of the peak,
    peak-normalised to ``PEAK``; None if silent."""
    peak = np.max(np.abs(audio)) if audio.size else 0.0
    if peak < 1e-5:
        return None
    start = int(np.argmax(np.abs(audio) >= peak * 10 ** (onset_db / 20)))
    start = max(start - int(0.002 * SAMPLE_RATE), 0)
    clip = audio[start:start + num_samples]
    clip = np.pad(clip, (0, num_samples - clip.size))
    return clip * (PEAK / np.max(np.abs(clip)))


def find_soundfonts(extra: list[str]) -> list[tuple[str, str]]:
    found = []
    for name, paths in SOUNDFONTS:
        for p in paths:
            if os.path.isfile(p):
                found.append((name, p))
                break
    for p in extra:
        if not os.path.isfile(p):
            raise SystemExit(f"--soundfont {p}: no such file")
        found.append((Path(p).stem.lower().replace(" ", "_"), p))
    return found


def build(out_dir: str, duration_s: float = 0.5, held_s: float = 0.35, extra_soundfonts=(),
          min_soundfonts: int = 2) -> list[dict]:
    """Render every (soundfont, instrument, note) into ``out_dir``; returns the CSV rows."""
    import soundfile as sf

    fluidsynth = shutil.which("fluidsynth")
    if fluidsynth is None:
        raise SystemExit("fluidsynth is not installed: apt-get install -y fluidsynth "
                         "fluid-soundfont-gm musescore-general-soundfont-small timgm6mb-soundfont")
    soundfonts = find_soundfonts(list(extra_soundfonts))
    if len(soundfonts) < min_soundfonts:
        raise SystemExit(f"found {len(soundfonts)} soundfont(s) ({[s for s, _ in soundfonts]}); need at "
                         f"least {min_soundfonts} so that nothing is tuned to one sample set. Install: "
                         "apt-get install -y fluid-soundfont-gm musescore-general-soundfont-small timgm6mb-soundfont")
    os.makedirs(out_dir, exist_ok=True)
    num_samples = int(round(duration_s * SAMPLE_RATE))
    rows, skipped = [], []
    spacing_s = held_s + duration_s + 1.5  # every note's release has died before the next
    with tempfile.TemporaryDirectory() as workdir:
        for sf_name, sf_path in soundfonts:
            for inst in INSTRUMENTS:
                notes = instrument_notes(inst)
                audio = render_midi(fluidsynth, sf_path, notes_midi_file(inst.program, notes, held_s, spacing_s),
                                    workdir)
                for i, midi_note in enumerate(notes):
                    start = int(round(i * spacing_s * SAMPLE_RATE))
                    segment = audio[start:start + int(round(spacing_s * SAMPLE_RATE))]
                    clip = clip_from_onset(segment, num_samples)
                    if clip is None:
                        skipped.append(f"{sf_name}/{inst.name}/{midi_note}")
                        continue
                    fname = f"{sf_name}__{inst.name}__{note_name(midi_note)}_m{midi_note}.wav"
                    sf.write(os.path.join(out_dir, fname), np.round(clip * 32767) / 32767, SAMPLE_RATE,
                             subtype="PCM_16")
                    rows.append(dict(file=fname, midi_note=midi_note, f0_hz=round(midi_to_hz(midi_note), 4),
                                     note_name=note_name(midi_note), instrument=inst.name, family=inst.family,
                                     program=inst.program, soundfont=sf_name, split=inst.split))
    with open(os.path.join(out_dir, "notes.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if skipped:
        print(f"skipped {len(skipped)} silent renders: {skipped}", file=sys.stderr)
    return rows


def read_notes_csv(path: str) -> list[dict]:
    """Rows of a ``notes.csv`` (midi_note as int, f0_hz as float)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["midi_note"] = int(r["midi_note"])
        r["f0_hz"] = float(r["f0_hz"])
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/real_notes", help="output folder (default: runs/real_notes, gitignored)")
    ap.add_argument("--duration-s", type=float, default=0.5)
    ap.add_argument("--held-s", type=float, default=0.35)
    ap.add_argument("--soundfont", action="append", default=[], help="extra .sf2/.sf3 file (repeatable)")
    args = ap.parse_args(argv)
    rows = build(args.out, args.duration_s, args.held_s, args.soundfont)
    by_split = {s: sum(r["split"] == s for r in rows) for s in ("dev", "test")}
    print(f"wrote {len(rows)} notes to {args.out} ({by_split}); sidecar {os.path.join(args.out, 'notes.csv')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
