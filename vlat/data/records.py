"""YODAS2-MCQA records: where rows come from and how their columns map onto one normalized question.

Sources: a hub dataset id (streamed with ``datasets``), a local directory holding ``<split>.jsonl`` /
``<split>.parquet`` / ``<split>.json``, or one such file. Audio columns are read undecoded (``Audio(decode=False)``:
``datasets`` 5.x decodes only through torchcodec) and decoded later with soundfile.

Layouts covered by :class:`ColumnMapping` (``layout="auto"`` picks by the columns present):
- ``choices``: ``question`` + ``choices`` list + ``answer`` index (or the correct option's text);
- ``correct_incorrect``: ``question`` + ``correct`` + ``incorrect1..3``, shuffled deterministically per question;
- ``reference``: the authors' ``path`` + ``Q`` (question with "(1) .. (4) .." inline) + ``text`` (correct digit).
"""

from __future__ import annotations

import io
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vlat.errors import BadSampleError

Layout = Literal["auto", "choices", "correct_incorrect", "reference"]
_INLINE_OPTION = re.compile(r"\((\d)\)\s*(.*?)(?=\s*\(\d\)|\Z)", re.S)


@dataclass
class ColumnMapping:
    """Which column holds what. Defaults match ``python -m vlat.testing synth-data`` and common hub layouts."""

    layout: Layout = "auto"
    id: str = "id"
    video_id: str = "video_id"  # grouping for the video-level split; falls back to the audio path
    audio: str = "audio"  # path (relative to the table) or a datasets audio dict {"bytes", "path"}
    duration: str = "duration"  # seconds; read from the audio header when absent
    question: str = "question"
    choices: str = "choices"
    answer: str = "answer"
    answer_base: int = 0  # 1 if the answer index column counts from 1
    correct: str = "correct"
    incorrect: list[str] = field(default_factory=lambda: ["incorrect1", "incorrect2", "incorrect3"])
    reference_audio: str = "path"
    reference_question: str = "Q"
    reference_answer: str = "text"

    def detect(self, row: dict) -> str:
        if self.layout != "auto":
            return self.layout
        if self.choices in row:
            return "choices"
        if self.correct in row and all(c in row for c in self.incorrect):
            return "correct_incorrect"
        if self.reference_question in row and self.reference_answer in row:
            return "reference"
        raise BadSampleError(
            _row_name(row, self),
            "missing_field",
            f"no known MCQA layout in columns {sorted(row)}: need {self.choices!r}, or {self.correct!r} + "
            f"{self.incorrect}, or {self.reference_question!r} + {self.reference_answer!r} (see ColumnMapping)",
        )


@dataclass
class Record:
    id: str
    video_id: str
    audio: Any  # anything vlat.audio.load_audio reads
    duration: float
    question: str
    options: list[str]
    answer: int


def _row_name(row: dict, m: ColumnMapping) -> str:
    for key in (m.id, m.audio, m.reference_audio):
        if key in row and isinstance(row[key], str | int):
            return f"row {row[key]}"
    return "row"


def _need(row: dict, col: str, name: str):
    if col not in row or row[col] is None or (isinstance(row[col], str) and not row[col].strip()):
        raise BadSampleError(name, "missing_field", f"missing column {col!r}")
    return row[col]


def _audio_source(value: Any, base_dir: Path | None) -> Any:
    if isinstance(value, str):
        path = Path(value)
        return str(path if path.is_absolute() or base_dir is None else base_dir / path)
    if isinstance(value, dict) and not value.get("bytes") and value.get("path") and base_dir is not None:
        return {"path": str(base_dir / value["path"])}
    return value


def audio_duration(src: Any, name: str) -> float:
    """Duration in seconds from the audio header (no full decode)."""
    import soundfile as sf

    try:
        if isinstance(src, dict):
            src = src.get("bytes") or src.get("path")
        info = sf.info(io.BytesIO(src) if isinstance(src, bytes | bytearray) else src)
    except Exception as e:  # noqa: BLE001 - soundfile raises several types for unreadable headers
        reason = "missing_audio" if isinstance(src, str) and not Path(src).exists() else "corrupt_audio"
        raise BadSampleError(name, reason, f"cannot read audio header ({e})") from e
    return info.frames / info.samplerate


def normalize(row: dict, m: ColumnMapping, base_dir: Path | None = None) -> Record:
    """One raw row -> :class:`Record`; raises :class:`BadSampleError` naming the row and the missing field."""
    name = _row_name(row, m)
    layout = m.detect(row)
    if layout == "reference":
        audio = _need(row, m.reference_audio, name)
        q = str(_need(row, m.reference_question, name))
        opts = _INLINE_OPTION.findall(q)
        question = q[: q.find("(1)")].strip() if "(1)" in q else ""
        options = [text.strip() for _, text in opts]
        digit = str(_need(row, m.reference_answer, name)).strip().strip("()")
        if not digit.isdigit():
            raise BadSampleError(name, "bad_answer", f"answer {digit!r} is not an option number")
        answer = int(digit) - 1
    else:
        audio = _need(row, m.audio, name)
        question = str(_need(row, m.question, name))
        if layout == "choices":
            options = list(_need(row, m.choices, name))
            raw = _need(row, m.answer, name)
            if isinstance(raw, str) and not raw.strip().lstrip("-").isdigit():
                if raw not in options:
                    raise BadSampleError(name, "bad_answer", f"answer {raw!r} is not one of the choices")
                answer = options.index(raw)
            else:
                answer = int(raw) - m.answer_base
        else:
            correct = str(_need(row, m.correct, name))
            options = [correct, *(str(_need(row, c, name)) for c in m.incorrect)]
            seed = zlib.crc32(f"{row.get(m.id, '')}\x00{question}".encode())
            order = np.random.default_rng(seed).permutation(len(options))
            options = [options[i] for i in order]
            answer = int(np.where(order == 0)[0][0])
    src = _audio_source(audio, base_dir)
    duration = row.get(m.duration)
    duration = float(duration) if duration is not None else audio_duration(src, name)
    video = row.get(m.video_id) or (audio if isinstance(audio, str) else (audio or {}).get("path")) or name
    rid = str(row.get(m.id) or f"{video}:{question[:40]}")
    return Record(rid, str(video), src, duration, question, [str(o) for o in options], answer)


def open_rows(source: str, split: str, audio_column: str = "audio") -> tuple[Iterator[dict], Path | None]:
    """Stream raw rows of ``split`` from a hub id, a local directory or a file; returns (rows, base_dir)."""
    import datasets

    path = Path(source)
    if path.exists():
        if path.is_dir():
            found = [p for ext in ("jsonl", "parquet", "json") if (p := path / f"{split}.{ext}").exists()]
            if not found:
                have = sorted(p.name for p in path.iterdir() if p.suffix in (".jsonl", ".parquet", ".json"))
                raise FileNotFoundError(f"{path}: no {split}.jsonl / {split}.parquet / {split}.json (found: {have})")
            path = found[0]
        kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(path.suffix)
        if kind is None:
            raise ValueError(f"{path}: unsupported table format (use .jsonl, .json or .parquet)")
        kwargs = {}
        if path.suffix == ".json" and '"annotation"' in path.read_text(errors="ignore")[:4096]:
            kwargs["field"] = "annotation"
        ds = datasets.load_dataset(kind, data_files=str(path), split="train", streaming=True, **kwargs)
        base = path.parent
    else:
        ds = datasets.load_dataset(source, split=split, streaming=True)
        base = None
    features = getattr(ds, "features", None) or {}
    if isinstance(features.get(audio_column), datasets.Audio):
        ds = ds.cast_column(audio_column, datasets.Audio(decode=False))
    return iter(ds), base


def nearest_bucket(duration_s: float, lengths_min: list[float]) -> float:
    """The length bucket (minutes) nearest to a recording's duration."""
    minutes = duration_s / 60.0
    return min(lengths_min, key=lambda b: (abs(b - minutes), b))


def in_holdout(video_id: str, fraction: float, seed: int = 0) -> bool:
    """Deterministic video-level split: a video is held out iff its hash falls below ``fraction``."""
    return (zlib.crc32(f"{seed}:{video_id}".encode()) % 10_000) < fraction * 10_000
