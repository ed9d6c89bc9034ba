"""YODAS2-MCQA records: how a row's columns map onto one normalized question (metadata + where its audio is).

Layouts covered by :class:`ColumnMapping` (``layout="auto"`` picks by the columns present):
- ``yodas2``: the published dataset: ``audio_array`` (16-kHz waveform inline) + ``sampling_rate``, ``question`` with
  the four options inline (``\n(1) …\n(2) …``) and the sentence "Provide only the choice number and the
  statement." before or after them, ``label`` (the correct option number 1-4, string or int);
- ``choices``: ``question`` + ``choices`` list + ``answer`` index (or the correct option's text);
- ``correct_incorrect``: ``question`` + ``correct`` + ``incorrect1..3``, shuffled deterministically per question;
- ``reference``: the authors' ``path`` + ``Q`` (question with "(1) .. (4) .." inline) + ``text`` (correct digit).

Durations always come from the audio itself (sample count / rate, or the file header), never from a column. Each
record has a ``recording_id`` (the audio path, or a hash of inline audio) that groups a recording's questions.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vlat.data.prompts import validate_mcqa
from vlat.data.sources import as_float_audio
from vlat.errors import BadSampleError

Layout = Literal["auto", "yodas2", "choices", "correct_incorrect", "reference"]
_INLINE_OPTION = re.compile(r"\((\d)\)\s*(.*?)(?=\s*\(\d\)|\Z)", re.S)
_OPTION_MARK = re.compile(r"(?:^|\n)[ \t]*\((\d)\)[ \t]*")
# the dataset's own answer-format instruction; our prompt states the format itself (vlat.data.prompts.INSTRUCTION)
YODAS2_INSTRUCTION = re.compile(r"[ \t]*Provide only the choice number and the statement\.?[ \t]*", re.I)


@dataclass
class ColumnMapping:
    """Which column holds what. Defaults match the published YODAS2-MCQA, ``python -m vlat.testing synth-data`` and
    common hub layouts."""

    layout: Layout = "auto"
    id: str = "id"
    video_id: str = "video_id"  # grouping for the held-out split; falls back to the recording
    audio: str = "audio"  # path (relative to the table) or a datasets audio dict {"bytes", "path"}
    audio_array: str = "audio_array"  # yodas2: the waveform inline
    sampling_rate: str = "sampling_rate"  # yodas2: its rate
    label: str = "label"  # yodas2: correct option number 1-4
    question: str = "question"
    choices: str = "choices"
    answer: str = "answer"
    answer_base: int = 0  # 1 if the answer index column counts from 1
    correct: str = "correct"
    incorrect: list[str] = field(default_factory=lambda: ["incorrect1", "incorrect2", "incorrect3"])
    reference_audio: str = "path"
    reference_question: str = "Q"
    reference_answer: str = "text"
    category: list[str] = field(default_factory=lambda: ["category", "task", "kind"])  # first present: the
    # question's category, reported beside the overall accuracy (the synthetic data's question kinds: "kind")

    def detect(self, row: dict) -> str:
        if self.layout != "auto":
            return self.layout
        if self.audio_array in row and self.label in row:
            return "yodas2"
        if self.choices in row:
            return "choices"
        if self.correct in row and all(c in row for c in self.incorrect):
            return "correct_incorrect"
        if self.reference_question in row and self.reference_answer in row:
            return "reference"
        cols = sorted(k for k in row if not k.startswith("_"))
        raise BadSampleError(
            _row_name(row, self),
            "missing_field",
            f"no known MCQA layout in columns {cols}: need {self.audio_array!r} + {self.label!r} (yodas2), or "
            f"{self.choices!r}, or {self.correct!r} + {self.incorrect}, or {self.reference_question!r} + "
            f"{self.reference_answer!r} (see ColumnMapping)",
        )


@dataclass
class Record:
    id: str
    video_id: str  # the video when the data names one, else the recording
    recording_id: str  # the audio file, or a content hash of inline audio
    audio: Any  # anything vlat.audio.decode.load_audio reads: a path, bytes, a datasets dict or (array, rate)
    duration: float  # seconds, from the audio itself
    question: str
    options: list[str]
    answer: int
    category: str | None = None  # the question's category or task, when the data has one
    bucket: float | None = None  # its length bucket in minutes (vlat.data.buckets), set when it is read


def _row_name(row: dict, m: ColumnMapping) -> str:
    if "_unit" in row:
        rid = row.get(m.id)
        return f"{row['_unit']} row {row['_row']}" + (f" (id {rid})" if rid not in (None, "") else "")
    for key in (m.id, m.audio, m.reference_audio):
        if key in row and isinstance(row[key], str | int):
            return f"row {row[key]}"
    return "row"


def _need(row: dict, col: str, name: str):
    value = row.get(col)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BadSampleError(name, "missing_field", f"missing column {col!r}")
    return value


def _audio_source(value: Any, base_dir: Path | None) -> Any:
    if isinstance(value, str):
        path = Path(value)
        return str(path if path.is_absolute() or base_dir is None else base_dir / path)
    if isinstance(value, dict) and not value.get("bytes") and value.get("path") and base_dir is not None:
        return {"path": str(base_dir / value["path"])}
    return value


@lru_cache(maxsize=4096)
def _header_duration(path: str) -> float:
    import soundfile as sf

    info = sf.info(path)
    return info.frames / info.samplerate


def audio_duration(src: Any, name: str) -> float:
    """Duration in seconds from the audio itself: sample count / rate inline, else the file header (no decode)."""
    import soundfile as sf

    if isinstance(src, tuple):
        return len(src[0]) / float(src[1])
    try:
        if isinstance(src, dict):
            src = src.get("bytes") or src.get("path")
        if isinstance(src, str):
            return _header_duration(src)
        info = sf.info(io.BytesIO(src) if isinstance(src, bytes | bytearray) else src)
    except Exception as e:  # noqa: BLE001 - soundfile raises several types for unreadable headers
        if isinstance(src, str):
            try:
                os.stat(src)  # soundfile says "System error." for a missing file or a symlink loop: say which
            except OSError as os_error:
                raise BadSampleError(name, "missing_audio", f"cannot open {src} ({os_error.strerror})") from None
        raise BadSampleError(name, "corrupt_audio", f"cannot read audio header ({e})") from e
    return info.frames / info.samplerate


def recording_key(src: Any) -> str:
    """A stable id for the recording behind ``src``: its path, or a content hash of inline audio / bytes."""
    if isinstance(src, str):
        return src
    if isinstance(src, dict) and not src.get("bytes") and src.get("path"):
        return str(src["path"])
    h = hashlib.blake2b(digest_size=8)
    if isinstance(src, tuple):  # length, rate and every 16th sample: distinct for any two real recordings, 16x cheaper
        arr = np.asarray(src[0])
        h.update(f"{arr.dtype}:{src[1]}:{len(arr)}:".encode())
        h.update(np.ascontiguousarray(arr[::16]).tobytes())
    else:
        h.update(bytes((src or {}).get("bytes") or b"") if isinstance(src, dict) else bytes(src))
    return "audio-" + h.hexdigest()


def parse_inline_question(text: str, name: str) -> tuple[str, list[str]]:
    """Stem and options of a question with the options inline (``\n(1) …\n(4) …``), the dataset's answer-format
    sentence removed wherever it stands."""
    text = YODAS2_INSTRUCTION.sub(" ", text.replace("\r\n", "\n")).strip()
    parts = _OPTION_MARK.split(text)
    stem, numbers, options = parts[0].strip(), parts[1::2], [p.strip() for p in parts[2::2]]
    if numbers != [str(i + 1) for i in range(len(numbers))] or len(options) != 4 or not all(options):
        raise BadSampleError(name, "bad_options", f"expected options (1)-(4) inline, found {numbers or 'none'}")
    if not stem:
        raise BadSampleError(name, "bad_question", "question stem is empty")
    return stem, options


def parse_label(value: Any, name: str) -> int:
    """``label`` (1-4 as int or string, ``"(2)"`` ok) -> 0-based answer index."""
    text = str(value).strip().strip("()").strip()
    if not text.isdigit() or not 1 <= int(text) <= 4:
        raise BadSampleError(name, "bad_answer", f"label {value!r} is not an option number 1-4")
    return int(text) - 1


def normalize(row: dict, m: ColumnMapping, base_dir: Path | None = None) -> Record:
    """One raw row -> :class:`Record`; raises :class:`BadSampleError` naming the row and the problem."""
    if "_bad_json" in row:
        raise BadSampleError(row["_bad_json"], "bad_json", f"not a JSON object ({row['_error']})")
    name = _row_name(row, m)
    layout = m.detect(row)
    if layout == "yodas2":
        wave = row.get(m.audio_array)
        if wave is None or len(wave) == 0:
            raise BadSampleError(name, "empty_audio", f"{m.audio_array!r} is empty")
        rate = _need(row, m.sampling_rate, name)
        if not isinstance(rate, int | np.integer) or rate <= 0:
            raise BadSampleError(name, "corrupt_audio", f"{m.sampling_rate!r} {rate!r} is not a positive integer")
        src = (as_float_audio(np.asarray(wave)), int(rate))
        question, options = parse_inline_question(str(_need(row, m.question, name)), name)
        answer = parse_label(_need(row, m.label, name), name)
    elif layout == "reference":
        src = _audio_source(_need(row, m.reference_audio, name), base_dir)
        q = str(_need(row, m.reference_question, name))
        opts = _INLINE_OPTION.findall(q)
        question = q[: q.find("(1)")].strip() if "(1)" in q else ""
        options = [text.strip() for _, text in opts]
        digit = str(_need(row, m.reference_answer, name)).strip().strip("()")
        if not digit.isdigit():
            raise BadSampleError(name, "bad_answer", f"answer {digit!r} is not an option number")
        answer = int(digit) - 1
    else:
        src = _audio_source(_need(row, m.audio, name), base_dir)
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
    options = [str(o) for o in options] if isinstance(options, list | tuple) else options
    validate_mcqa(question, options, answer, name)  # four options, an answer among them: else skipped, everywhere
    duration = audio_duration(src, name)
    recording = recording_key(src)
    video = row.get(m.video_id) or recording
    rid = row.get(m.id)
    rid = str(rid) if rid not in (None, "") else (f"{row['_unit']}#{row['_row']}" if "_unit" in row else name)
    category = next((str(row[c]) for c in m.category if row.get(c) not in (None, "")), None)
    return Record(rid, str(video), recording, src, duration, question, options, answer, category)


def in_holdout(group_id: str, fraction: float, seed: int = 0) -> bool:
    """Deterministic group-level split: a group (video, else recording) is held out iff its hash is below
    ``fraction``."""
    return (zlib.crc32(f"{seed}:{group_id}".encode()) % 10_000) < fraction * 10_000
