"""One owner for "which recordings are in bucket L" (vlat.data.buckets), from every entry point, on data without
clip-length folders: recordings of 30 s, 1 min, 3 min and 5 min asked for at 1 and 5 minutes."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from vlat.data import MCQABatchStream, StreamSpec
from vlat.testing import SynthConfig, write_synth_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def four_lengths(tmp_path_factory):
    cfg = SynthConfig(
        durations=(30.0, 60.0, 180.0, 300.0), videos_per_duration=2, segments_per_video=1, test_fraction=0.5, seed=3
    )
    return write_synth_dataset(tmp_path_factory.mktemp("four") / "data", cfg)


def _durations(data: Path, split: str) -> dict[str, float]:
    return {r["id"]: r["duration"] for r in map(json.loads, open(data / f"{split}.jsonl"))}


def test_every_entry_point_puts_a_recording_in_the_same_bucket(four_lengths, processor):
    from vlat.evaluation.runner import EvalSpec, open_source, recordings

    test = _durations(four_lengths, "test")
    assert sorted(set(test.values())) == [30.0, 60.0, 180.0, 300.0]
    spec = EvalSpec(model="unused", data=str(four_lengths), lengths=[1.0, 5.0])
    left = []
    got = {
        r.id: r.bucket
        for g in recordings(spec, open_source(spec), on_filtered=lambda r: left.append(r.duration))
        for r in g
    }
    assert got and all(test[i] == 60 * b for i, b in got.items())  # 1 min holds 60 s, 5 min 300 s, nothing else
    assert Counter(left) == Counter(d for d in test.values() if d in (30.0, 180.0))  # left out, and counted
    # validation batches carry the same bucket for each question
    val = MCQABatchStream(StreamSpec(str(four_lengths), "test", lengths=[1.0, 5.0]), processor, 4, train=False)
    seen = {i: b for batch in val for i, b in zip(batch.get("id", []), batch.get("bucket", []), strict=True)}
    assert seen == got
    # training with train_lengths [1] reads only the 1-minute recordings; with none, every recording
    train = _durations(four_lengths, "train")
    one = MCQABatchStream(StreamSpec(str(four_lengths), "train", lengths=[1.0]), processor, 4, train=True)
    ids = [i for batch in one for i in batch.get("id", [])]
    assert ids and {train[i] for i in ids} == {60.0} and len(ids) == sum(d == 60.0 for d in train.values())
    every = MCQABatchStream(StreamSpec(str(four_lengths), "train"), processor, 4, train=True)
    assert sorted(i for batch in every for i in batch.get("id", [])) == sorted(train)


def test_evaluate_scores_only_the_requested_lengths_and_counts_the_rest(four_lengths, tiny_model_dir, tmp_path):
    out = tmp_path / "eval"
    cmd = [sys.executable, str(ROOT / "evaluate.py"), "--model", str(tiny_model_dir), "--data", str(four_lengths)]
    res = subprocess.run(
        [*cmd, "--methods", "vanilla", "--lengths", "1,5", "--output", str(out), "--no-progress"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    test = _durations(four_lengths, "test")
    doc = json.loads((out / "results.json").read_text())
    cells = {r["length_min"]: r for r in doc["results"]}
    assert set(cells) == {1.0, 5.0}
    for minutes, r in cells.items():
        assert r["questions"] == sum(d == 60 * minutes for d in test.values())
        assert r["duration_s_min"] == r["duration_s_max"] == 60 * minutes
    n30, n180 = (sum(d == x for d in test.values()) for x in (30.0, 180.0))
    assert doc["left_out_questions"] == n30 + n180 and doc["left_out_by_duration_s"] == {"30": n30, "180": n180}
    assert f"left out {n30 + n180} questions whose recordings are in no requested length bucket (30 s: {n30}, " in (
        res.stderr
    )
