"""Synthetic long-audio MCQA data in the YODAS2-MCQA layout whose evidence sits in one place, anywhere.

Each recording is a row of fixed-length *slots* (``slot_seconds`` each) over its whole duration; every slot holds a
background tone burst (one of four, drawn independently and uniformly) over light noise. One *marker* (a bell,
whistle, chime or horn, in one of four pitches) sounds once, together with the burst of a slot drawn uniformly over
the whole recording. Two questions per recording (YODAS2-MCQA's questions are each about one segment of a long
recording) ask which marker is heard and in which pitch. A listener that misses the marker's slot knows nothing of
either answer (slot, marker and pitch are drawn independently of everything else): a single 30-s window of a
5-minute recording answers one recording in ten and guesses the rest (:mod:`vlat.testing.listeners`).

Options are the four markers / pitches in random order, or (``fixed_options``) always in the same order: a listening
task without the name-to-number lookup, which a tiny language model cannot learn in CPU minutes
(:mod:`vlat.testing.base_model`; measured there as well: questions that must first pick one of several markers by
name stayed near chance on the tiny model, so each recording holds one). :func:`decode_events` recovers every
slot's tone and marker from the waveform by spectral analysis (tests and the reference listeners).

Layouts written (both read by :mod:`vlat.data`); train and test always hold disjoint videos:
- ``jsonl``: ``audio/<segment_id>.flac`` (16 kHz mono) plus ``train.jsonl`` and ``test.jsonl`` (and
  ``validation.jsonl`` with ``validation_fraction``), one question per line
  with ``id``, ``video_id``, ``segment_id``, ``audio`` (path relative to the table), ``duration``, ``question``,
  ``choices`` (4 strings), ``answer`` (0-based) and ``kind``;
- ``yodas2``: exactly the published YODAS2-MCQA layout: one folder per clip length in minutes (``0.5/``, ``2/``),
  ``<split>-0000i-of-0000n.parquet`` shards in small row groups, one row per question with ``audio_array`` (the
  16-kHz waveform inline, repeated for each of a recording's consecutive questions), ``sampling_rate``,
  ``question`` (stem, the options inline as ``\n(1) …``, and the sentence "Provide only the choice number and the
  statement." before or after them) and ``label`` (the option number 1-4: a string in even shards, an int in odd
  ones). No id, video or duration column, as in the real data.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from vlat.io import make_staging_dir, publish_dir, write_json_atomic

TONES: dict[str, float] = {  # the background: one of these in every slot
    "amber": 350.0,
    "blue": 500.0,
    "coral": 700.0,
    "dune": 950.0,
}
PITCHES = ("low", "mid", "high", "top")  # the four versions of the marker
MARKERS = ("bell", "whistle", "chime", "horn")  # one of these sounds, once, in each recording
# marker m in pitch p sounds at 1200 Hz x 1.127^(4m + p): 16 frequencies from 1.2 to 7.2 kHz, 12.7% apart, all above
# the background tones
MARKER_HZ: dict[tuple[str, str], float] = {
    (m, p): 1200.0 * 6.0 ** ((4 * i + j) / 15) for i, m in enumerate(MARKERS) for j, p in enumerate(PITCHES)
}
QUESTIONS = {  # kind -> (question, options in their fixed order)
    "marker": ("Which marker is heard?", MARKERS),
    "pitch": ("In which pitch is the marker heard?", PITCHES),
}
SAMPLE_RATE = 16000
TONE_AMPLITUDE = 0.3
MARKER_AMPLITUDE = 0.2


@dataclass(frozen=True)
class SynthConfig:
    durations: tuple[float, ...] = (30.0, 60.0, 120.0)  # seconds, one group of videos per duration
    videos_per_duration: int = 4
    segments_per_video: int = 2
    test_fraction: float = 0.25  # share of videos (not questions) held out for test.jsonl
    validation_fraction: float = 0.0  # share of videos held out for a validation split (after the test videos)
    slot_seconds: float = 5.0
    tone_seconds: float = 1.5
    fixed_options: bool = False  # options = the four pitches in order, instead of shuffled
    seed: int = 0
    layout: str = "jsonl"  # jsonl | yodas2 (see the module docstring)
    shards: int = 2  # yodas2: parquet shards per split and length folder
    row_group_rows: int = 8  # yodas2: rows per parquet row group

    def validate(self) -> None:
        if not self.durations:
            raise ValueError("durations: give at least one duration")
        for d in self.durations:
            if not d > 0:
                raise ValueError(f"durations: {d} is not a positive number of seconds")
            if d < self.slot_seconds:
                raise ValueError(f"durations: {d} s is shorter than one {self.slot_seconds}-s tone slot")
        if self.videos_per_duration < 1 or self.segments_per_video < 1:
            raise ValueError("videos_per_duration and segments_per_video must be >= 1")
        if not 0.0 <= self.test_fraction <= 1.0:
            raise ValueError(f"test_fraction: {self.test_fraction} is outside [0, 1]")
        if not 0.0 <= self.validation_fraction <= 1.0 - self.test_fraction + 1e-9:  # (float sums)
            raise ValueError(f"validation_fraction: {self.validation_fraction} is outside [0, 1 - test_fraction]")
        if not 0 < self.tone_seconds <= self.slot_seconds:
            raise ValueError("tone_seconds must be in (0, slot_seconds]")
        if self.layout not in ("jsonl", "yodas2"):
            raise ValueError(f"layout: {self.layout!r} is not jsonl or yodas2")
        if self.shards < 1 or self.row_group_rows < 1:
            raise ValueError("shards and row_group_rows must be >= 1")


@dataclass(frozen=True)
class Scene:
    """What a recording holds: the background tone of every slot, and the one marker's slot, name and pitch."""

    tones: list[str]
    slot: int
    marker: str
    pitch: str

    def answer(self, kind: str) -> str:
        return {"marker": self.marker, "pitch": self.pitch}[kind]


def draw_scene(n_slots: int, rng: np.random.Generator) -> Scene:
    """Independent uniform background tones; the marker in a uniformly drawn slot, name and pitch."""
    tones = [list(TONES)[i] for i in rng.integers(0, len(TONES), size=n_slots)]
    slot = int(rng.integers(0, n_slots))
    return Scene(tones, slot, MARKERS[int(rng.integers(0, len(MARKERS)))], PITCHES[int(rng.integers(0, len(PITCHES)))])


def render_events(
    scene: Scene, duration: float, cfg: SynthConfig, rng: np.random.Generator
) -> tuple[np.ndarray, list[int]]:
    """Float32 waveform at 16 kHz: one tone burst (10-ms ramps) per slot at a random offset over white noise, each
    the marker sounding (its pitch's frequency) with its slot's burst; and the first sample of every slot's burst."""
    total = int(round(duration * SAMPLE_RATE))
    wav = rng.normal(0.0, 0.01, size=total).astype(np.float32)
    slot = int(cfg.slot_seconds * SAMPLE_RATE)
    tone_len = int(cfg.tone_seconds * SAMPLE_RATE)
    t = np.arange(tone_len, dtype=np.float32) / SAMPLE_RATE
    ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01).astype(np.float32)
    starts = []
    for i, name in enumerate(scene.tones):
        start = i * slot + int(rng.integers(0, slot - tone_len + 1))
        burst = TONE_AMPLITUDE * np.sin(2 * np.pi * TONES[name] * t, dtype=np.float32)
        if i == scene.slot:
            hz = MARKER_HZ[scene.marker, scene.pitch]
            burst = burst + MARKER_AMPLITUDE * np.sin(2 * np.pi * hz * t, dtype=np.float32)
        wav[start : start + tone_len] += ramp * burst
        starts.append(start)
    return wav, starts


def _band_energy(spec: np.ndarray, freqs, n: int, sample_rate: int) -> np.ndarray:
    bins = np.round(np.asarray(freqs) * n / sample_rate).astype(int)
    return np.array([spec[max(b - 3, 0) : b + 4].sum() for b in bins])


def decode_events(
    wav: np.ndarray, sample_rate: int, slot_seconds: float = 5.0
) -> list[tuple[str, list[tuple[str, str]]]]:
    """Every whole slot of a waveform, from its spectrum: (the background tone with the most energy, the (marker,
    pitch) pairs sounding with it: energy at their frequency above a tenth of the tone's)."""
    slot = int(round(slot_seconds * sample_rate))
    names, keys = list(TONES), list(MARKER_HZ)
    out = []
    for i in range(len(wav) // slot):
        seg = wav[i * slot : (i + 1) * slot]
        spec = np.abs(np.fft.rfft(seg))
        tone = _band_energy(spec, list(TONES.values()), len(seg), sample_rate)
        marks = _band_energy(spec, list(MARKER_HZ.values()), len(seg), sample_rate)
        heard = [k for k, e in zip(keys, marks, strict=True) if e > 0.1 * tone.max()]
        out.append((names[int(np.argmax(tone))], heard))
    return out


def questions_for(
    scene: Scene, rng: np.random.Generator, cfg: SynthConfig = SynthConfig()
) -> list[tuple[str, str, list[str], int]]:
    """(kind, question, options, 0-based answer) of both questions about one recording: the options in their fixed
    order (``fixed_options``) or shuffled."""
    out = []
    for kind, (text, options) in QUESTIONS.items():
        choices = list(options) if cfg.fixed_options else [options[i] for i in rng.permutation(len(options))]
        out.append((kind, text, choices, choices.index(scene.answer(kind))))
    return out


def _recordings(cfg: SynthConfig):
    """(split, video_id, segment_id, duration, waveform, questions) for every recording, deterministic per seed."""
    rng = np.random.default_rng(cfg.seed)
    for d_idx, duration in enumerate(cfg.durations):
        n_test = int(round(cfg.videos_per_duration * cfg.test_fraction))
        n_val = int(round(cfg.videos_per_duration * cfg.validation_fraction))
        for v in range(cfg.videos_per_duration):
            video_id = f"d{d_idx}v{v:03d}"
            split = "test" if v < n_test else "validation" if v < n_test + n_val else "train"
            for s in range(cfg.segments_per_video):
                scene = draw_scene(int(duration // cfg.slot_seconds), rng)
                wav, _ = render_events(scene, duration, cfg, rng)
                yield split, video_id, f"{video_id}s{s:02d}", duration, wav, questions_for(scene, rng, cfg)


def _write_jsonl(tmp: Path, cfg: SynthConfig) -> None:
    import soundfile as sf

    (tmp / "audio").mkdir()
    rows: dict[str, list[dict]] = {"train": [], "test": []}  # validation.jsonl too when it has videos
    for split, video_id, seg_id, duration, wav, questions in _recordings(cfg):
        sf.write(tmp / "audio" / f"{seg_id}.flac", wav, SAMPLE_RATE, subtype="PCM_16")
        for q, (kind, text, choices, answer) in enumerate(questions):
            rows.setdefault(split, []).append(
                {
                    "id": f"{seg_id}q{q}",
                    "video_id": video_id,
                    "segment_id": seg_id,
                    "audio": f"audio/{seg_id}.flac",
                    "duration": float(duration),
                    "question": text,
                    "choices": choices,
                    "answer": answer,
                    "kind": kind,
                }
            )
    for split, split_rows in rows.items():
        with open(tmp / f"{split}.jsonl", "w") as f:
            for row in split_rows:
                f.write(json.dumps(row) + "\n")


YODAS2_SENTENCE = "Provide only the choice number and the statement."


def yodas2_question(stem: str, choices: list[str], sentence_first: bool) -> str:
    """A question as the published dataset writes it: the options inline, the answer-format sentence on one side."""
    options = "".join(f"\n({i + 1}) {c}" for i, c in enumerate(choices))
    return f"{stem} {YODAS2_SENTENCE}{options}" if sentence_first else f"{stem}{options}\n{YODAS2_SENTENCE}"


def _write_yodas2(tmp: Path, cfg: SynthConfig) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    groups: dict[tuple[float, str], list[list[dict]]] = {}
    for split, _video, _seg, duration, wav, questions in _recordings(cfg):
        rows = [
            {
                "audio_array": wav,
                "question": yodas2_question(text, choices, (q + len(wav)) % 2 == 0),
                "label": answer + 1,
            }
            for q, (_kind, text, choices, answer) in enumerate(questions)
        ]
        groups.setdefault((duration, split), []).append(rows)
    for (duration, split), recordings in groups.items():  # a recording's questions: consecutive rows
        folder = tmp / f"{round(duration / 60, 3):g}"
        folder.mkdir(exist_ok=True)
        n = min(cfg.shards, len(recordings))
        for i in range(n):
            rows = [r for rec in recordings[i::n] for r in rec]
            labels = [str(r["label"]) if i % 2 == 0 else r["label"] for r in rows]
            table = pa.table(
                {
                    "audio_array": pa.array([r["audio_array"] for r in rows], type=pa.list_(pa.float32())),
                    "sampling_rate": pa.array([SAMPLE_RATE] * len(rows), type=pa.int64()),
                    "question": [r["question"] for r in rows],
                    "label": labels,
                }
            )
            pq.write_table(table, folder / f"{split}-{i:05d}-of-{n:05d}.parquet", row_group_size=cfg.row_group_rows)


def write_synth_dataset(out_dir: str | os.PathLike, cfg: SynthConfig = SynthConfig(), overwrite: bool = False) -> Path:
    """Generate the dataset into ``out_dir`` (assembled beside it, then renamed into place). Deterministic per seed."""
    cfg.validate()
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty (pass overwrite to replace it)")
    tmp = make_staging_dir(out)
    try:
        (_write_yodas2 if cfg.layout == "yodas2" else _write_jsonl)(tmp, cfg)
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def write_deaf_copy(
    src: str | os.PathLike, dst: str | os.PathLike, split: str = "test", seconds: float | None = None, seed: int = 0
) -> Path:
    """A control: ``src``'s ``split`` (jsonl layout; only recordings of ``seconds`` when given) with every recording
    replaced by its background noise alone, questions and answers unchanged. A model that hears cannot beat chance
    on it; one that scores above chance answers from something other than the audio."""
    import soundfile as sf

    src, dst = Path(src), Path(dst)
    rows = [json.loads(x) for x in (src / f"{split}.jsonl").read_text().splitlines()]
    rows = [r for r in rows if seconds is None or abs(r["duration"] - seconds) < 1e-6]
    if not rows:
        raise ValueError(f"{src / split}.jsonl: no recordings of {seconds} s")
    rng = np.random.default_rng(seed)
    tmp = make_staging_dir(dst)
    try:
        (tmp / "audio").mkdir()
        for audio in dict.fromkeys(r["audio"] for r in rows):
            duration = next(r["duration"] for r in rows if r["audio"] == audio)
            noise = rng.normal(0.0, 0.01, size=int(round(duration * SAMPLE_RATE))).astype(np.float32)
            sf.write(tmp / audio, noise, SAMPLE_RATE, subtype="PCM_16")
        (tmp / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        publish_dir(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


# The task the offline base model learns and the quick start trains on: the pitches as options, always in the same
# order (see the module docstring).
BASE_TASK = SynthConfig(fixed_options=True)
SMOKE_DATA = replace(
    BASE_TASK, durations=(30.0, 60.0, 120.0), videos_per_duration=16, segments_per_video=2, seed=0, layout="yodas2"
)


def ensure_synth_dataset(out_dir: str | os.PathLike, cfg: SynthConfig) -> bool:
    """The dataset of ``cfg`` in ``out_dir``, generated unless the one there was made with ``cfg`` (recorded in
    ``<out_dir>.json`` beside it); True when it was (re)generated."""
    out = Path(out_dir)
    marker = out.with_name(out.name + ".json")
    settings = json.loads(json.dumps(asdict(cfg)))
    try:
        made_with = json.loads(marker.read_text())
    except (OSError, ValueError):
        made_with = None
    if made_with == settings and out.is_dir():
        return False
    write_synth_dataset(out, cfg, overwrite=True)
    write_json_atomic(marker, settings)
    return True


def write_smoke_fixtures(root: str | os.PathLike = ".smoke", progress=print) -> Path:
    """``root/base-model`` (trained here, a few minutes: :mod:`vlat.testing.base_model`) and ``root/synth-data``
    (the published YODAS2-MCQA layout) for ``configs/smoke.yaml``. Each is kept only when it was made with today's
    settings (``root/synth-data.json``; the base model's ``vlat_base_model.json``), so fixtures from an older
    version (another task, another base model) are rebuilt instead of silently mismatched."""
    from vlat.testing.base_model import BaseModelConfig, ensure_base_model

    root = Path(root)
    ensure_synth_dataset(root / "synth-data", SMOKE_DATA)
    ensure_base_model(root / "base-model", BaseModelConfig(), progress=progress)
    return root
