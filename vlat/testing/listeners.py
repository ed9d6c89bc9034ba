"""Reference listeners for the synthetic task: what hearing part of a recording is worth, from the waveform alone.

A listener hears one window of a recording (the first 30 s, the last 30 s, or all of it), finds the markers that
sound in it (:func:`vlat.testing.synth_data.decode_events`) and answers with the marker it heard, or its pitch. When
the marker is not in its window it knows nothing of the answer (the marker's slot, name and pitch are drawn
independently of everything else), so it guesses: it is credited the expected score of a uniform guess, 1 / options. No
model is involved; a model scoring clearly above the single-window listeners at a length hears beyond 30 s there.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vlat.testing.synth_data import decode_events

LISTENERS = ("chance", "first_30s", "last_30s", "whole")


def window(wav: np.ndarray, sample_rate: int, listener: str, seconds: float = 30.0) -> np.ndarray | None:
    """The part of ``wav`` a listener hears (None: nothing, the chance listener)."""
    n = int(round(seconds * sample_rate))
    return {"chance": None, "first_30s": wav[:n], "last_30s": wav[-n:], "whole": wav}[listener]


def credit(heard: np.ndarray | None, sample_rate: int, kind: str, choices: list[str], answer: int) -> float:
    """A listener's expected score on one question: 1 or 0 when it heard the marker, 1 / options when it did not."""
    if heard is not None:
        for _tone, markers in decode_events(heard, sample_rate):
            for name, pitch in markers:
                return float({"marker": name, "pitch": pitch}[kind] == choices[answer])
    return 1.0 / len(choices)


def listen(root: str | Path, split: str = "test") -> list[dict]:
    """Every listener's expected score on every question of a jsonl-layout synthetic split: rows of ``listener``,
    ``length_min``, ``kind``, ``segment_id``, ``score``."""
    import soundfile as sf

    root = Path(root)
    by_audio: dict[str, list[dict]] = {}
    for line in (root / f"{split}.jsonl").read_text().splitlines():
        row = json.loads(line)
        by_audio.setdefault(row["audio"], []).append(row)
    out = []
    for audio, questions in by_audio.items():
        wav, sr = sf.read(root / audio, dtype="float32")
        for listener in LISTENERS:
            heard = window(wav, sr, listener)
            for q in questions:
                out.append(
                    {
                        "listener": listener,
                        "length_min": round(q["duration"] / 60, 4),
                        "kind": q["kind"],
                        "segment_id": q["segment_id"],
                        "score": credit(heard, sr, q["kind"], q["choices"], q["answer"]),
                    }
                )
    return out


def summarize(scores: list[dict]) -> dict:
    """``{length: {listener: {accuracy, questions, recordings, by_kind}}}`` (lengths in minutes, as JSON keys)."""
    cells: dict[tuple[float, str], list[dict]] = {}
    for s in scores:
        cells.setdefault((s["length_min"], s["listener"]), []).append(s)
    out: dict[str, dict] = {}
    for (length, listener), rows in sorted(cells.items()):
        kinds: dict[str, list[float]] = {}
        for r in rows:
            kinds.setdefault(r["kind"], []).append(r["score"])
        out.setdefault(f"{length:g}", {})[listener] = {
            "accuracy": float(np.mean([r["score"] for r in rows])),
            "questions": len(rows),
            "recordings": len({r["segment_id"] for r in rows}),
            "by_kind": {k: float(np.mean(v)) for k, v in sorted(kinds.items())},
        }
    return out
