import json
import shutil
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vlat.data import ColumnMapping, MCQABatchStream, StreamSpec, normalize, read_rows, resolve
from vlat.data.buckets import STANDARD_LENGTHS, bucket_of, requested
from vlat.data.collate import padded_fraction
from vlat.data.records import in_holdout, parse_inline_question, parse_label
from vlat.data.sources import SourceError
from vlat.errors import BadSampleError
from vlat.testing.synth_data import QUESTIONS


def _rows(d, split="train"):
    return [json.loads(x) for x in open(d / f"{split}.jsonl")]


def _first_row(source: str, split: str = "train") -> dict:
    src = resolve(source, split)
    return next(read_rows(src, src.units[0]))


def test_four_layouts(synth_dir, yodas2_dir, tmp_path):
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
    rec = normalize(_first_row(str(ref), "test"), ColumnMapping(), tmp_path)
    assert (rec.question, rec.options, rec.answer) == ("Which tone?", ["amber", "blue", "coral", "dune"], 2)
    assert rec.duration == row["duration"]  # from the audio header: no duration column there
    # the published layout: inline waveform, options inline, label 1-4
    raw = _first_row(str(yodas2_dir))
    rec = normalize(raw, ColumnMapping(), None)
    assert isinstance(rec.audio, tuple) and rec.audio[1] == 16000 and rec.duration == len(raw["audio_array"]) / 16000
    assert len(rec.options) == 4 and rec.answer == int(raw["label"]) - 1
    assert "Provide only" not in rec.question and rec.id == "0.5/train-00000-of-00002.parquet#0"


def test_inline_question_parsing_by_hand():
    stem, opts = parse_inline_question(
        "What is said first? Provide only the choice number and the statement.\n(1) a cat\n(2) a dog\n(3) two\n(4) x",
        "r",
    )
    assert (stem, opts) == ("What is said first?", ["a cat", "a dog", "two", "x"])
    stem, opts = parse_inline_question(
        "Who speaks?\n(1) Ann\n(2) Bob (the host)\n(3) Cy\n(4) Di\nProvide only the choice number and the statement.",
        "r",
    )
    assert (stem, opts) == ("Who speaks?", ["Ann", "Bob (the host)", "Cy", "Di"])
    for bad in (
        "No options here",
        "Q?\n(1) a\n(2) b\n(3) c",
        "Q?\n(1) a\n(3) b\n(2) c\n(4) d",
        "Q?\n(1) a\n(2)\n(3) c\n(4) d",
    ):
        with pytest.raises(BadSampleError) as e:
            parse_inline_question(bad, "r")
        assert e.value.reason == "bad_options"
    assert [parse_label(x, "r") for x in ("1", 4, " 2 ", "(3)")] == [0, 3, 1, 2]
    for bad in (0, 7, "7", "two", ""):
        with pytest.raises(BadSampleError, match="label"):
            parse_label(bad, "r")


def test_missing_columns_and_sources_are_named(synth_dir, yodas2_dir):
    with pytest.raises(BadSampleError, match="no known MCQA layout"):
        normalize({"id": "x", "audio": "a.wav", "question": "Q?"}, ColumnMapping(), synth_dir)
    with pytest.raises(BadSampleError, match="missing column 'question'") as err:
        normalize({"id": "x9", "audio": "a.wav", "choices": list("abcd"), "answer": 0}, ColumnMapping(), synth_dir)
    assert "x9" in str(err.value)
    with pytest.raises(SourceError, match="no valid.jsonl"):
        resolve(str(synth_dir), "valid")
    with pytest.raises(SourceError, match=r"lengths \[10.0\]: no such clip-length folder \(present: \[0.5, 1.0\]"):
        resolve(str(yodas2_dir), "train", [10.0])
    with pytest.raises(SourceError, match="no such file or directory"):
        resolve("./not/here", "train")


def test_mirror_lengths_pick_folders_and_units_come_from_footers(yodas2_dir):
    everything = resolve(str(yodas2_dir), "train")
    assert everything.folder_lengths == (0.5, 1.0)
    assert {u.folder_minutes for u in everything.units} == {0.5, 1.0}
    want = sum(pq.ParquetFile(p).metadata.num_rows for p in yodas2_dir.glob("*/train-*.parquet"))
    assert everything.num_rows == want == 12  # 3 train recordings x 2 questions x 2 lengths
    assert len(everything.units) > 4  # row groups of 3 rows: several units per shard
    one = resolve(str(yodas2_dir), "train", [1.0])
    assert {u.folder_minutes for u in one.units} == {1.0} and one.num_rows == 6


def test_hub_id_goes_through_the_same_reader(yodas2_dir, monkeypatch):
    """The hub path (HfFileSystem) is the local-mirror code with another filesystem: point it at the mirror."""
    from fsspec.implementations.dirfs import DirFileSystem
    from fsspec.implementations.local import LocalFileSystem

    import vlat.data.sources as sources

    hub_root = yodas2_dir.parent / "hub"
    (hub_root / "datasets" / "yophis").mkdir(parents=True)
    (hub_root / "datasets" / "yophis" / "yodas2-mcqa").symlink_to(yodas2_dir)
    monkeypatch.setattr(
        sources, "filesystem", lambda hub: DirFileSystem(str(hub_root), LocalFileSystem()) if hub else LocalFileSystem()
    )
    hub = resolve("yophis/yodas2-mcqa", "test", [1.0])
    local = resolve(str(yodas2_dir), "test", [1.0])
    assert hub.hub and [(u.name, u.row_group, u.num_rows) for u in hub.units] == [
        (u.name, u.row_group, u.num_rows) for u in local.units
    ]
    recs = [normalize(r, ColumnMapping(), None) for u in hub.units for r in read_rows(hub, u)]
    assert [r.id for r in recs] == [
        normalize(r, ColumnMapping(), None).id for u in local.units for r in read_rows(local, u)
    ]


def test_duration_comes_from_the_audio_not_the_row(synth_dir, tmp_path):
    row = {**_rows(synth_dir)[0], "duration": 600.0}  # the row lies: the file is 30 s
    rec = normalize(row, ColumnMapping(), synth_dir)
    assert rec.duration == pytest.approx(30.0) and bucket_of(rec.duration, None, [0.5, 1, 2, 5, 10]) == 0.5


def test_recording_ids_group_a_recordings_questions(yodas2_dir):
    src = resolve(str(yodas2_dir), "test")
    recs = [normalize(r, ColumnMapping(), None) for u in src.units for r in read_rows(src, u)]
    by_recording = Counter(r.recording_id for r in recs)
    q = len(QUESTIONS)
    assert len(recs) == 2 * q and sorted(by_recording.values()) == [q, q]  # 2 test recordings, their questions
    assert all(r.video_id == r.recording_id for r in recs)  # no video column: the split is recording-level


def test_buckets_by_hand_and_holdout():
    # without folders: within 10% of L (1 min: 54-66 s; 2 min: 108-132 s); never the nearest of a grid
    assert bucket_of(60, None, [1, 2]) == 1 and bucket_of(66, None, [1, 2]) == 1 and bucket_of(66.5, None, [1]) is None
    assert bucket_of(115, None, [1, 2, 5]) == 2 and bucket_of(100, None, [1, 2, 5]) is None
    assert bucket_of(30, None, [1, 2, 5, 10]) is None and bucket_of(75, None, [1, 2, 5, 10]) is None  # not "1"
    assert bucket_of(180, None, [2, 5]) is None and bucket_of(180, None, [2, 3, 5]) == 3
    assert bucket_of(75, None, [1.25], tolerance=0.0) == 1.25 and bucket_of(74, None, [1.25], tolerance=0.0) is None
    # with a clip-length folder, the folder decides (the published clips of "2" may run a little short or long)
    assert bucket_of(117, 2.0, [2.0, 5.0]) == 2.0 and bucket_of(117, 2.0, [5.0]) is None
    # the buckets reported: asked for, else the folders, else the standard ones
    assert requested([5, 1], (0.5, 1)) == [1, 5] and requested(None, (2.0, 0.5)) == [0.5, 2.0]
    assert requested(None, ()) == list(STANDARD_LENGTHS)
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


def test_lengths_filter_and_holdout_split(synth_dir, yodas2_dir, processor):
    only_short = list(_stream(processor, synth_dir, lengths=[0.5]))
    assert only_short and all(d == 30.0 for b in only_short for d in b.get("duration", []))
    assert sum(b["filtered"] for b in only_short) == sum(r["duration"] != 30.0 for r in _rows(synth_dir))
    keep = {v for b in _stream(processor, synth_dir, holdout_fraction=0.5) for v in b.get("video_id", [])}
    held = {
        v
        for b in _stream(processor, synth_dir, holdout_fraction=0.5, holdout_side="holdout")
        for v in b.get("video_id", [])
    }
    assert keep and held and not keep & held
    # without video ids the held-out split is by recording: a recording's questions stay together
    sides = [
        Counter(
            r
            for b in _stream(processor, yodas2_dir, holdout_fraction=0.5, holdout_side=side)
            for r in b.get("recording_id", [])
        )
        for side in ("keep", "holdout")
    ]
    assert sides[0] and sides[1] and not set(sides[0]) & set(sides[1])
    assert all(n == len(QUESTIONS) for side in sides for n in side.values())


@pytest.mark.parametrize("train", [True, False], ids=["training", "validation"])
def test_bad_samples_are_skipped_and_counted(synth_dir, processor, tmp_path, caplog, train):
    d = tmp_path / "data"
    shutil.copytree(synth_dir, d)
    rows = _rows(d)
    (d / "audio" / "broken.flac").write_bytes(b"not audio at all" * 50)
    bad = [
        {**rows[0], "id": "corrupt", "audio": "audio/broken.flac", "duration": 30.0},
        {**rows[0], "id": "gone", "audio": "audio/missing.flac", "duration": 30.0},
        {**rows[0], "id": "three", "choices": rows[0]["choices"][:3]},
        {k: v for k, v in rows[0].items() if k != "question"} | {"id": "noq"},
        {**rows[0], "id": "seven", "answer": 7},  # scored as wrong in validation before: now skipped everywhere
    ]
    with open(d / "train.jsonl", "w") as f:
        for r in rows[:6] + bad:
            f.write(json.dumps(r) + "\n")
        f.write("{not json\n")
    with open(d / "train.jsonl", "ab") as f:
        f.write(b'{"id": "latin1", "question": "caf\xe9"}\n')  # not UTF-8
    with caplog.at_level("WARNING", logger="vlat.data"):
        batches = list(_stream(processor, d, batch_size=4, train=train))
    skipped = Counter()
    for b in batches:
        skipped.update(b["skipped"])
    assert skipped == {
        "corrupt_audio": 1,
        "missing_audio": 1,
        "bad_options": 1,
        "missing_field": 1,
        "bad_answer": 1,
        "bad_json": 2,
    }
    assert sum(b["n"] for b in batches) == 6
    assert "broken.flac" in caplog.text and caplog.text.count("skipping") == 5  # the first 5 of 8, named


def _write_bad_yodas2(path, good_wave):
    opts = "\n(1) a\n(2) b\n(3) c\n(4) d"
    rows = [
        (good_wave, "Q0?" + opts, "1", None),
        ([], "Q1?" + opts, "2", "empty_audio"),
        ([0.1, float("nan")] * 8000, "Q2?" + opts, "2", "nan_audio"),
        (good_wave, "Q3? (1) a (2) b", "1", "bad_options"),
        (good_wave, "Q4?" + opts, "0", "bad_answer"),
        (good_wave, "Q5?" + opts, "7", "bad_answer"),
        (good_wave, None, "1", "missing_field"),
        (good_wave, "Q7? Provide only the choice number and the statement." + opts, "4", None),
    ]
    table = pa.table(
        {
            "audio_array": pa.array([r[0] for r in rows], type=pa.list_(pa.float32())),
            "sampling_rate": pa.array([16000] * len(rows), type=pa.int64()),
            "question": pa.array([r[1] for r in rows], type=pa.string()),
            "label": [r[2] for r in rows],
            "extra_column": list(range(len(rows))),  # unknown columns are ignored
        }
    )
    path.mkdir(parents=True)
    pq.write_table(table, path / "train-00000-of-00001.parquet", row_group_size=3)
    return Counter(r[3] for r in rows if r[3])


def test_bad_rows_of_the_published_layout_skipped_by_reason(yodas2_dir, processor, tmp_path):
    wave = normalize(_first_row(str(yodas2_dir)), ColumnMapping(), None).audio[0][: 16000 * 5]
    want = _write_bad_yodas2(tmp_path / "bad" / "0.1", wave)
    from torch.utils.data import DataLoader

    stream = _stream(processor, tmp_path / "bad", batch_size=2)
    batches = list(DataLoader(stream, batch_size=None, num_workers=2))  # never crashes a worker
    got = Counter()
    for b in batches:
        got.update(b["skipped"])
    assert got == want and sum(b["n"] for b in batches) == 2


def test_length_bucketing_keeps_padding_low(synth_dir, processor):
    bucketed = [b for b in _stream(processor, synth_dir, batch_size=4, bucket_buffer=40) if b["n"]]
    frac = sum(padded_fraction(b["attention_mask"]) * b["n"] for b in bucketed) / sum(b["n"] for b in bucketed)
    assert frac < 0.10
    no_bucket = [b for b in _stream(processor, synth_dir, batch_size=4, bucket_buffer=4) if b["n"]]
    frac_random = sum(padded_fraction(b["attention_mask"]) * b["n"] for b in no_bucket) / sum(b["n"] for b in no_bucket)
    assert frac_random > frac


def _count_encodes(monkeypatch) -> list:
    import vlat.data.stream as stream_mod

    calls = []
    real = stream_mod.encode_recording
    monkeypatch.setattr(stream_mod, "encode_recording", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_inline_audio_is_featurised_once_per_recording_per_window(yodas2_one_file, processor, monkeypatch):
    calls = _count_encodes(monkeypatch)
    # one row group, one window: a recording's questions land in different batches, featurised once
    batches = [b for b in _stream(processor, yodas2_one_file, batch_size=3) if b["n"]]
    recordings = {r for b in batches for r in b["recording_id"]}
    assert len(calls) == len(recordings) < sum(len(set(b["recording_id"])) for b in batches)
    assert sum(b["n"] for b in batches) == len(QUESTIONS) * len(recordings)


def test_audio_files_are_decoded_once_per_batch(synth_dir, processor, monkeypatch):
    calls = _count_encodes(monkeypatch)
    batches = [b for b in _stream(processor, synth_dir, split="test", train=False, batch_size=5) if b["n"]]
    assert len(calls) == sum(len(set(b["recording_id"])) for b in batches) < sum(b["n"] for b in batches)


def test_a_recording_that_cannot_be_featurised_skips_each_of_its_questions(yodas2_one_file, processor, monkeypatch):
    import vlat.data.stream as stream_mod

    calls = []

    def fail(*a, name="?", **k):
        calls.append(name)
        raise BadSampleError(name, "corrupt_audio", "cannot decode audio (test)")

    monkeypatch.setattr(stream_mod, "encode_recording", fail)
    batches = list(_stream(processor, yodas2_one_file, batch_size=3))
    skipped = Counter()
    for b in batches:
        skipped.update(b["skipped"])
    assert calls and sum(b["n"] for b in batches) == 0 and skipped == {"corrupt_audio": len(QUESTIONS) * len(calls)}


def test_over_long_audio_is_skipped_from_its_header_without_decoding(
    synth_dir, yodas2_one_file, processor, monkeypatch
):
    """A file's header (an inline waveform's sample count) is enough to reject it as over max_audio_seconds: the
    30-s clips with a 10-s limit are counted as too_long and never decoded or featurised."""
    import soundfile as sf

    calls = _count_encodes(monkeypatch)
    decoded = []
    real_read = sf.read
    monkeypatch.setattr(sf, "read", lambda f, *a, **k: decoded.append(f) or real_read(f, *a, **k))
    for source in (synth_dir, yodas2_one_file):
        rows = resolve(str(source), "train").num_rows
        skipped = Counter()
        for b in _stream(processor, source, batch_size=3, max_audio_seconds=10.0):
            skipped.update(b["skipped"])
            assert b["n"] == 0
        assert skipped == {"too_long": rows}, source
    assert not calls and not decoded


def test_worker_batches_send_each_recordings_features_once_from_shared_memory(yodas2_one_file, processor):
    from torch.utils.data import DataLoader, IterableDataset

    class Probe(IterableDataset):  # reports from inside the worker, before torch's own transfer
        def __iter__(self):
            for b in _stream(processor, yodas2_one_file, batch_size=8):  # a recording's questions share a batch
                if b["n"]:
                    yield [t.is_shared() for t in b["audio_features"]], len(set(b["recording_id"]))

    probes = list(DataLoader(Probe(), batch_size=None, num_workers=1))
    assert probes and all(all(flags) and len(flags) == recordings for flags, recordings in probes)
    assert any(len(flags) < 8 for flags, _ in probes)  # fewer features than questions were sent
    b = next(b for b in _stream(processor, yodas2_one_file, batch_size=3) if b["n"])
    assert not any(t.is_shared() for t in b["audio_features"])  # without workers nothing is copied


def test_a_worker_keeps_what_it_inherited_out_of_its_garbage_collector(yodas2_one_file, processor):
    import gc

    from torch.utils.data import DataLoader, IterableDataset

    inherited = [["made by the training process"]]  # a container the collector tracks

    def tracked(obj) -> bool:  # in one of the collector's generations (frozen objects are in none)
        return any(o is obj for o in gc.get_objects())

    class Probe(IterableDataset):
        def __iter__(self):
            for b in _stream(processor, yodas2_one_file, batch_size=8):
                yield tracked(inherited), gc.get_freeze_count(), b["n"]

    before = gc.get_freeze_count()
    questions = sum(b["n"] for b in _stream(processor, yodas2_one_file, batch_size=8))  # in this process
    assert gc.get_freeze_count() == before and tracked(inherited)  # the training process's own collector: untouched
    probes = list(DataLoader(Probe(), batch_size=None, num_workers=1))
    assert questions > 0 and sum(n for *_, n in probes) == questions  # every question still arrives
    assert all(not seen and frozen > 1000 for seen, frozen, _ in probes)  # the worker's collector never walks them


_WORKER_IMPORTS = """
import json, sys
from torch.utils.data import DataLoader, IterableDataset
from transformers import AutoProcessor
from vlat.data import MCQABatchStream, StreamSpec

stream = MCQABatchStream(StreamSpec(sys.argv[2], "train"), AutoProcessor.from_pretrained(sys.argv[1]), 4, train=True)

class Probe(IterableDataset):
    def __iter__(self):
        inherited = set(sys.modules)
        n = sum(b["n"] for b in stream)
        yield n, sorted(set(sys.modules) - inherited)

print(json.dumps(next(iter(DataLoader(Probe(), batch_size=None, num_workers=1)))))
"""


def test_a_worker_imports_nothing_its_training_process_had_not(yodas2_one_file, tiny_model_dir):
    """One-time costs (pyarrow's first numpy conversion imports pandas, the prompt path imports the model's length
    formula) are paid where the stream is built, not again in every worker of every epoch: checked in a fresh
    interpreter, as ``train.py`` starts."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _WORKER_IMPORTS, str(tiny_model_dir), str(yodas2_one_file)],
        capture_output=True,
        text=True,
        check=True,
    )
    questions, imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert questions > 0 and imported == []


def test_validation_batches_are_left_padded_with_prefix(synth_dir, processor):
    b = next(iter(_stream(processor, synth_dir, split="test", train=False, batch_size=3)))
    assert "labels" not in b and bool(b["attention_mask"][:, -1].all())
    assert processor.tokenizer.decode(b["input_ids"][0, -1:]) == "("


def test_training_target_ends_with_im_end(yodas2_dir, processor):
    b = next(b for b in _stream(processor, yodas2_dir) if b["n"])
    end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    for labels in b["labels"]:
        kept = labels[labels != -100]
        assert int(kept[-1]) == end and processor.tokenizer.decode(kept[:-1]).startswith("(")


def test_parquet_table_source(synth_dir, processor, tmp_path):
    import pandas as pd

    d = tmp_path / "pq"
    shutil.copytree(synth_dir / "audio", d / "audio")
    pd.read_json(synth_dir / "test.jsonl", lines=True).to_parquet(d / "test.parquet")
    ids = [i for b in _stream(processor, d, split="test", train=False, lengths=[0.5, 1.25]) for i in b.get("id", [])]
    assert sorted(ids) == sorted(r["id"] for r in _rows(synth_dir, "test"))
    # without lengths, validation reports the standard buckets: the 75-s recording is in none, left out
    standard = [i for b in _stream(processor, d, split="test", train=False) for i in b.get("id", [])]
    assert sorted(standard) == sorted(r["id"] for r in _rows(synth_dir, "test") if r["duration"] == 30.0)
