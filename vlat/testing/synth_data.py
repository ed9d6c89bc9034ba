"""Synthetic long-audio MCQA data in the YODAS2-MCQA layout, answerable from the audio itself.

Each recording is a row of fixed-length *slots* (``slot_seconds`` each) over its whole duration; every slot holds one
tone burst from a palette of named tones (the first ``tones`` of eight) over light noise. Five questions per recording
(as YODAS2-MCQA has five per segment) ask which tone is heard first, last, nearest the middle, most often, and never —
so answering needs the beginning, the end and a count over the whole recording, and accuracy can be measured per
length. Options are the correct tone and three distractors in random order, or (``fixed_options``, a palette of four)
the whole palette in palette order: a listening task without the name-to-number lookup, which a tiny language model
cannot learn in CPU minutes (:mod:`vlat.testing.base_model`).
:func:`decode_tone_events` recovers the slot sequence from the waveform by spectral analysis (used by tests).

Layouts written (both read by :mod:`vlat.data`); train and test always hold disjoint videos:
- ``jsonl``: ``audio/<segment_id>.flac`` (16 kHz mono) plus ``train.jsonl`` and ``test.jsonl`` (and
  ``validation.jsonl`` with ``validation_fraction``), one question per line
  with ``id``, ``video_id``, ``segment_id``, ``audio`` (path relative to the table), ``duration``, ``question``,
  ``choices`` (4 strings), ``answer`` (0-based) and ``kind``;
- ``yodas2``: exactly the published YODAS2-MCQA layout: one folder per clip length in minutes (``0.5/``, ``2/``),
  ``<split>-0000i-of-0000n.parquet`` shards in small row groups, one row per question with ``audio_array`` (the
  16-kHz waveform inline, repeated for each of a recording's five consecutive questions), ``sampling_rate``,
  ``question`` (stem, the options inline as ``\n(1) …``, and the sentence "Provide only the choice number and the
  statement." before or after them) and ``label`` (the option number 1-4: a string in even shards, an int in odd
  ones). No id, video or duration column, as in the real data.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from vlat.io import make_staging_dir, publish_dir, write_json_atomic

TONES: dict[str, float] = {
    "amber": 350.0,
    "blue": 500.0,
    "coral": 700.0,
    "dune": 950.0,
    "ember": 1300.0,
    "fern": 1750.0,
    "gold": 2300.0,
    "iris": 3000.0,
}
QUESTIONS = {
    "first": "Which tone is heard first in the recording?",
    "last": "Which tone is heard last in the recording?",
    "middle": "Which tone is heard closest to the middle of the recording?",
    "most": "Which tone is heard most often in the recording?",
    "never": "Which tone is never heard in the recording?",
}
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class SynthConfig:
    durations: tuple[float, ...] = (30.0, 60.0, 120.0)  # seconds, one group of videos per duration
    videos_per_duration: int = 4
    segments_per_video: int = 2
    test_fraction: float = 0.25  # share of videos (not questions) held out for test.jsonl
    validation_fraction: float = 0.0  # share of videos held out for a validation split (after the test videos)
    slot_seconds: float = 5.0
    tone_seconds: float = 1.5
    present_tones: int = 4  # tones used in one recording; the rest are candidates for "never heard"
    tones: int = 8  # palette: the first `tones` of TONES
    fixed_options: bool = False  # options = the palette (4 tones) in palette order, instead of shuffled distractors
    seed: int = 0
    layout: str = "jsonl"  # jsonl | yodas2 (see the module docstring)
    shards: int = 2  # yodas2: parquet shards per split and length folder
    row_group_rows: int = 8  # yodas2: rows per parquet row group

    def validate(self) -> None:
        for d in self.durations:
            if not d > 0:
                raise ValueError(f"durations: {d} is not a positive number of seconds")
            if d < 4 * self.slot_seconds:  # 3 distinct tones + one repeated (a unique "most often")
                raise ValueError(f"durations: {d} s is shorter than four {self.slot_seconds}-s tone slots")
        if not self.durations:
            raise ValueError("durations: give at least one duration")
        if self.videos_per_duration < 1 or self.segments_per_video < 1:
            raise ValueError("videos_per_duration and segments_per_video must be >= 1")
        if not 0.0 <= self.test_fraction <= 1.0:
            raise ValueError(f"test_fraction: {self.test_fraction} is outside [0, 1]")
        if not 0.0 <= self.validation_fraction <= 1.0 - self.test_fraction:
            raise ValueError(f"validation_fraction: {self.validation_fraction} is outside [0, 1 - test_fraction]")
        if not 0 < self.tone_seconds <= self.slot_seconds:
            raise ValueError("tone_seconds must be in (0, slot_seconds]")
        if self.layout not in ("jsonl", "yodas2"):
            raise ValueError(f"layout: {self.layout!r} is not jsonl or yodas2")
        if self.shards < 1 or self.row_group_rows < 1:
            raise ValueError("shards and row_group_rows must be >= 1")
        if not 4 <= self.tones <= len(TONES):
            raise ValueError(f"tones: {self.tones} is outside 4..{len(TONES)}")
        if not 3 <= self.present_tones < self.tones:
            raise ValueError(f"present_tones: {self.present_tones} must be >= 3 and below tones ({self.tones})")
        if self.fixed_options and self.tones != 4:
            raise ValueError(f"fixed_options: the options are the palette, so tones must be 4 (got {self.tones})")

    @property
    def palette(self) -> list[str]:
        return list(TONES)[: self.tones]


def slot_sequence(n_slots: int, rng: np.random.Generator, present: int, names: list[str] | None = None) -> list[str]:
    """Tone names per slot: one strictly most frequent tone, >= 3 distinct tones (distractors for "never"), and at
    least one palette tone absent."""
    names = names or list(TONES)
    chosen = [names[i] for i in rng.choice(len(names), size=present, replace=False)]
    while True:
        seq = [chosen[i] for i in rng.integers(0, present, size=n_slots)]
        counts = Counter(seq).most_common()
        if len(counts) >= min(3, n_slots) and (len(counts) == 1 or counts[0][1] > counts[1][1]):
            return seq


def answers_from_sequence(seq: list[str], palette: list[str] | None = None) -> dict[str, str | list[str]]:
    """The correct answer of every question kind, from the slot sequence alone (hand-checkable)."""
    counts = Counter(seq).most_common()
    return {
        "first": seq[0],
        "last": seq[-1],
        "middle": seq[(len(seq) - 1) // 2],
        "most": counts[0][0],
        "never": sorted(set(palette or TONES) - set(seq)),  # any of these is correct; one is offered
    }


def render_recording(seq: list[str], duration: float, cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Float32 waveform at 16 kHz: one tone burst (10-ms ramps) per slot at a random offset, over white noise."""
    return render_events(seq, duration, cfg, rng)[0]


def render_events(
    seq: list[str], duration: float, cfg: SynthConfig, rng: np.random.Generator
) -> tuple[np.ndarray, list[int]]:
    """:func:`render_recording`, and the first sample of every slot's tone burst."""
    total = int(round(duration * SAMPLE_RATE))
    wav = rng.normal(0.0, 0.01, size=total).astype(np.float32)
    slot = int(cfg.slot_seconds * SAMPLE_RATE)
    tone_len = int(cfg.tone_seconds * SAMPLE_RATE)
    t = np.arange(tone_len, dtype=np.float32) / SAMPLE_RATE
    ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01).astype(np.float32)
    starts = []
    for i, name in enumerate(seq):
        start = i * slot + int(rng.integers(0, slot - tone_len + 1))
        wav[start : start + tone_len] += 0.3 * ramp * np.sin(2 * np.pi * TONES[name] * t, dtype=np.float32)
        starts.append(start)
    return wav, starts


def decode_tone_events(wav: np.ndarray, sample_rate: int, slot_seconds: float = 5.0) -> list[str]:
    """Recover the tone of every slot from a waveform: the palette frequency with the most spectral energy."""
    slot = int(round(slot_seconds * sample_rate))
    names, freqs = list(TONES), np.array(list(TONES.values()))
    out = []
    for i in range(len(wav) // slot):
        seg = wav[i * slot : (i + 1) * slot]
        spec = np.abs(np.fft.rfft(seg))
        bins = np.round(freqs * len(seg) / sample_rate).astype(int)
        energy = [spec[max(b - 3, 0) : b + 4].sum() for b in bins]
        out.append(names[int(np.argmax(energy))])
    return out


def questions_for(
    seq: list[str], rng: np.random.Generator, cfg: SynthConfig = SynthConfig()
) -> list[tuple[str, str, list[str], int]]:
    """(kind, question, options, 0-based answer) of every question kind about one recording."""
    palette = cfg.palette
    answers = answers_from_sequence(seq, palette)
    present = sorted(set(seq))
    out = []
    for kind, text in QUESTIONS.items():
        correct = str(rng.choice(answers["never"])) if kind == "never" else answers[kind]
        if cfg.fixed_options:
            out.append((kind, text, list(palette), palette.index(correct)))
            continue
        if kind == "never":
            pool = present
        else:
            pool = [n for n in palette if n != correct]
        distractors = [str(x) for x in rng.choice(pool, size=3, replace=False)]
        choices = [correct, *distractors]
        order = rng.permutation(4)
        choices = [choices[i] for i in order]
        out.append((kind, text, choices, int(np.where(order == 0)[0][0])))
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
                seq = slot_sequence(int(duration // cfg.slot_seconds), rng, cfg.present_tones, cfg.palette)
                wav = render_recording(seq, duration, cfg, rng)
                yield split, video_id, f"{video_id}s{s:02d}", duration, wav, questions_for(seq, rng, cfg)


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
    for (duration, split), recordings in groups.items():
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


# The task the offline base model learns and the quick start trains on: four tones, three per recording, the
# palette as options (see the module docstring).
BASE_TASK = SynthConfig(tones=4, present_tones=3, fixed_options=True)
SMOKE_DATA = replace(
    BASE_TASK, durations=(30.0, 60.0, 120.0), videos_per_duration=6, segments_per_video=2, seed=0, layout="yodas2"
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
