import json
import shutil

import pytest

from vlat.collate import padded_fraction
from vlat.data import ColumnMapping, MCQABatchStream, StreamSpec, normalize, open_rows
from vlat.data.records import in_holdout, nearest_bucket
from vlat.errors import BadSampleError


def _rows(d, split="train"):
    return [json.loads(x) for x in open(d / f"{split}.jsonl")]


def test_three_layouts(synth_dir, tmp_path):
    row = _rows(synth_dir)[0]
    rec = normalize(row, ColumnMapping(), synth_dir)
    assert rec.options == row["choices"] and rec.answer == row["answer"] and rec.video_id == row["video_id"]
    # correct + incorrect1..3: shuffled deterministically per question, answer follows the correct text
    ci = {
        "id": "q1",
        "audio": row["audio"],
        "question": "Q?",
        "correct": "yes",
        "incorrect1": "a",
        "incorrect2": "b",
        "incorrect3": "c",
    }
    r1, r2 = normalize(ci, ColumnMapping(), synth_dir), normalize(dict(ci), ColumnMapping(), synth_dir)
    assert r1.options == r2.options and r1.options[r1.answer] == "yes" and sorted(r1.options) == ["a", "b", "c", "yes"]
    answers = {normalize({**ci, "id": f"q{i}"}, ColumnMapping(), synth_dir).answer for i in range(40)}
    assert len(answers) > 1  # not always in the same slot
    # the authors' JSON: {"annotation": [{"path", "Q", "text"}]}
    ref = tmp_path / "ref.json"
    q = "Which tone?\n(1) amber\n(2) blue\n(3) coral\n(4) dune"
    ref.write_text(
        json.dumps({"annotation": [{"path": str(synth_dir / row["audio"]), "Q": q, "text": "3", "task": "QA"}]})
    )
    rows, base = open_rows(str(ref), "test")
    rec = normalize(next(rows), ColumnMapping(), base)
    assert (rec.question, rec.options, rec.answer) == ("Which tone?", ["amber", "blue", "coral", "dune"], 2)
    assert rec.duration == row["duration"]  # from the audio header: no duration column there


def test_missing_columns_are_named(synth_dir):
    with pytest.raises(BadSampleError, match="no known MCQA layout"):
        normalize({"id": "x", "audio": "a.wav", "question": "Q?"}, ColumnMapping(), synth_dir)
    with pytest.raises(BadSampleError, match="missing column 'question'") as err:
        normalize({"id": "x9", "audio": "a.wav", "choices": list("abcd"), "answer": 0}, ColumnMapping(), synth_dir)
    assert "x9" in str(err.value)
    with pytest.raises(FileNotFoundError, match="no valid.jsonl"):
        open_rows(str(synth_dir), "valid")


def test_buckets_and_video_holdout():
    assert nearest_bucket(75, [1, 2, 5, 10]) == 1 and nearest_bucket(100, [1, 2, 5, 10]) == 2
    assert nearest_bucket(30, [0.5, 1, 2]) == 0.5
    videos = [f"v{i}" for i in range(2000)]
    held = [v for v in videos if in_holdout(v, 0.2)]
    assert 0.15 < len(held) / len(videos) < 0.25
    assert held == [v for v in videos if in_holdout(v, 0.2)]  # deterministic


def _stream(processor, source, **kw):
    spec_kw = {k: kw.pop(k) for k in list(kw) if k in ("lengths", "holdout_fraction", "holdout_side", "seed")}
    return MCQABatchStream(
        StreamSpec(str(source), kw.pop("split", "train"), **spec_kw),
        processor,
        kw.pop("batch_size", 2),
        train=kw.pop("train", True),
        **kw,
    )


def test_lengths_filter_and_holdout_split(synth_dir, processor):
    only_short = list(_stream(processor, synth_dir, lengths=[0.5], shuffle_buffer=1))
    assert only_short and all(d == 30.0 for b in only_short for d in b["duration"])
    keep = {v for b in _stream(processor, synth_dir, holdout_fraction=0.5) for v in b["video_id"]}
    held = {
        v for b in _stream(processor, synth_dir, holdout_fraction=0.5, holdout_side="holdout") for v in b["video_id"]
    }
    assert keep and held and not keep & held


def test_bad_samples_are_skipped_and_counted(synth_dir, processor, tmp_path, caplog):
    d = tmp_path / "data"
    shutil.copytree(synth_dir, d)
    rows = _rows(d)
    (d / "audio" / "broken.flac").write_bytes(b"not audio at all" * 50)
    bad = [
        {**rows[0], "id": "corrupt", "audio": "audio/broken.flac", "duration": 30.0},
        {**rows[0], "id": "gone", "audio": "audio/missing.flac", "duration": 30.0},
        {**rows[0], "id": "three", "choices": rows[0]["choices"][:3]},
        {k: v for k, v in rows[0].items() if k != "question"} | {"id": "noq"},
    ]
    with open(d / "train.jsonl", "w") as f:
        for r in rows[:6] + bad:
            f.write(json.dumps(r) + "\n")
    with caplog.at_level("WARNING", logger="vlat.data"):
        batches = list(_stream(processor, d, batch_size=4, shuffle_buffer=1))
    skipped = sum(sum(b["skipped"].values()) for b in batches)
    reasons = {k for b in batches for k in b["skipped"]}
    assert skipped == 4 and reasons == {"corrupt_audio", "missing_audio", "bad_options", "missing_field"}
    assert sum(b["n"] for b in batches) == 6
    assert "corrupt" in caplog.text and "noq" in caplog.text


def test_length_bucketing_keeps_padding_low(synth_dir, processor):
    bucketed = [b for b in _stream(processor, synth_dir, batch_size=4, bucket_buffer=40, shuffle_buffer=40) if b["n"]]
    frac = sum(padded_fraction(b["attention_mask"]) * b["n"] for b in bucketed) / sum(b["n"] for b in bucketed)
    assert frac < 0.10
    no_bucket = [b for b in _stream(processor, synth_dir, batch_size=4, bucket_buffer=4, shuffle_buffer=40) if b["n"]]
    frac_random = sum(padded_fraction(b["attention_mask"]) * b["n"] for b in no_bucket) / sum(b["n"] for b in no_bucket)
    assert frac_random > frac


def test_resume_skips_consumed_batches(synth_dir, processor):
    full = [b["id"] for b in _stream(processor, synth_dir, seed=3)]
    resumed = _stream(processor, synth_dir, seed=3)
    resumed.skip_plans = 5
    assert [b["id"] for b in resumed] == full[5:]
    assert full != [b["id"] for b in _stream(processor, synth_dir, seed=4)]


def test_ranks_get_disjoint_shards(synth_dir, processor):
    ids = [[i for b in _stream(processor, synth_dir, world_size=2, rank=r) for i in b["id"]] for r in (0, 1)]
    everything = [i for b in _stream(processor, synth_dir) for i in b["id"]]
    assert not set(ids[0]) & set(ids[1]) and sorted(ids[0] + ids[1]) == sorted(everything)


def test_validation_batches_are_left_padded_with_prefix(synth_dir, processor):
    b = next(iter(_stream(processor, synth_dir, split="test", train=False, batch_size=3)))
    assert "labels" not in b and bool(b["attention_mask"][:, -1].all())
    assert processor.tokenizer.decode(b["input_ids"][0, -1:]) == "("


def test_parquet_source(synth_dir, processor, tmp_path):
    import pandas as pd

    d = tmp_path / "pq"
    shutil.copytree(synth_dir / "audio", d / "audio")
    pd.read_json(synth_dir / "test.jsonl", lines=True).to_parquet(d / "test.parquet")
    ids = [i for b in _stream(processor, d, split="test", train=False) for i in b["id"]]
    assert sorted(ids) == sorted(r["id"] for r in _rows(synth_dir, "test"))


def test_resume_counts_trailing_bad_rows_batch(synth_dir, processor, tmp_path):
    d = tmp_path / "data"
    shutil.copytree(synth_dir, d)
    rows = _rows(d)[:4] + [{"id": "noq", "audio": "audio/x.flac", "choices": list("abcd"), "answer": 0}]
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    from itertools import islice

    def first(n, skip=0):
        s = _stream(processor, d, batch_size=2, shuffle_buffer=1, bucket_buffer=2, infinite=True)
        s.skip_plans = skip
        return [(b["n"], tuple(b.get("id", ())), b["data_pass"]) for b in islice(s, n)]

    full = first(7)  # per pass: 2 batches of 2 + one empty batch carrying the bad row's count
    assert [n for n, _, _ in full[:3]] == [2, 2, 0] and full[3][2] == 1
    assert first(4, skip=3) == full[3:]  # resuming after the empty batch continues exactly
    resumed = _stream(processor, d, batch_size=2, shuffle_buffer=1, bucket_buffer=2, infinite=True)
    resumed.skip_plans = 3
    assert next(iter(resumed))["skipped"] == {}  # the bad row was reported before the resume: not again
