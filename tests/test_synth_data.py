import json
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import soundfile as sf

from vlat.testing import MARKERS, SynthConfig, decode_events, write_synth_dataset
from vlat.testing.synth_data import TONES


def _rows(d):
    return {split: [json.loads(x) for x in open(d / f"{split}.jsonl")] for split in ("train", "test")}


def _heard_with(events):
    """kind -> the answer decoded from the audio: the one marker sounding in the recording, and its pitch."""
    found = [pair for _tone, markers in events for pair in markers]
    assert len(found) == 1 and found[0][0] in MARKERS, found
    return {"marker": found[0][0], "pitch": found[0][1]}


def test_answers_are_recoverable_from_the_audio(synth_dir):
    rows = _rows(synth_dir)
    assert rows["train"] and rows["test"]
    checked = 0
    by_audio = {}
    for row in rows["train"] + rows["test"]:
        by_audio.setdefault(row["audio"], []).append(row)
    for audio, qs in by_audio.items():
        wav, sr = sf.read(synth_dir / audio, dtype="float32")
        assert abs(len(wav) / sr - qs[0]["duration"]) < 1e-3
        events = decode_events(wav, sr)
        assert len(events) == int(qs[0]["duration"] // 5)  # one 5-s slot after another over the whole recording
        heard = _heard_with(events)
        assert [q["kind"] for q in qs] == ["marker", "pitch"]
        for q in qs:
            assert len(q["choices"]) == 4 and len(set(q["choices"])) == 4
            assert q["choices"][q["answer"]] == heard[q["kind"]], (audio, q["kind"])
            checked += 1
    assert checked == len(rows["train"]) + len(rows["test"])


def test_evidence_sits_anywhere_and_slots_are_independent():
    # over many recordings, the marker's slot is uniform over the whole duration, and its name and pitch uniform
    # whatever the rest of the recording holds: a listener that misses the slot can only guess
    from vlat.testing.synth_data import PITCHES, draw_scene

    rng = np.random.default_rng(0)
    scenes = [draw_scene(12, rng) for _ in range(4000)]
    for values, n in (([s.slot for s in scenes], 12), ([PITCHES.index(s.pitch) for s in scenes], 4)):
        assert np.abs(np.bincount(values, minlength=n) / len(scenes) - 1 / n).max() < 0.02
    names = np.bincount([MARKERS.index(s.marker) for s in scenes], minlength=4) / len(scenes)
    assert np.abs(names - 0.25).max() < 0.02
    # the first half's most frequent background tone says nothing about the pitch (or the marker)
    late = [s for s in scenes if s.slot >= 6]
    agree = np.mean(
        [
            PITCHES.index(s.pitch) == "amber blue coral dune".split().index(max(s.tones[:6], key=s.tones[:6].count))
            for s in late
        ]
    )
    assert abs(agree - 0.25) < 0.03


def test_split_is_by_video(synth_dir):
    rows = _rows(synth_dir)
    train_videos = {r["video_id"] for r in rows["train"]}
    test_videos = {r["video_id"] for r in rows["test"]}
    assert train_videos and test_videos and not train_videos & test_videos


def test_deterministic_for_a_seed(tmp_path):
    cfg = SynthConfig(durations=(20.0,), videos_per_duration=2, segments_per_video=1, seed=3)
    a = write_synth_dataset(tmp_path / "a", cfg)
    b = write_synth_dataset(tmp_path / "b", cfg)
    c = write_synth_dataset(tmp_path / "c", SynthConfig(durations=(20.0,), videos_per_duration=2, seed=4))
    for name in ["train.jsonl", "test.jsonl"]:
        assert (a / name).read_bytes() == (b / name).read_bytes()
    for f in (a / "audio").iterdir():
        assert f.read_bytes() == (b / "audio" / f.name).read_bytes()
    assert (a / "train.jsonl").read_bytes() != (c / "train.jsonl").read_bytes()


def test_frequencies_are_distinct_and_apart():
    # 4 background tones below 1 kHz, 4 markers x 4 pitches from 1.2 to 7.2 kHz (under the 8-kHz mel ceiling),
    # neighbours 12% apart: the spectra of all 20 sounds are told apart by decode_events
    from vlat.testing.synth_data import MARKER_HZ

    hz = sorted([*TONES.values(), *MARKER_HZ.values()])
    assert len(hz) == 20 and max(TONES.values()) < min(MARKER_HZ.values()) and max(hz) < 8000
    assert min(b / a for a, b in zip(hz, hz[1:], strict=False)) > 1.12


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "vlat.testing", *args], capture_output=True, text=True)


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    res = _cli("synth-data", str(tmp_path / "x"), "--durations", "30,-5")
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
    assert "-5" in res.stderr and "durations" in res.stderr
    assert not (tmp_path / "x").exists()

    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    for cmd in ("synth-data", "tiny-model"):
        res = _cli(cmd, str(blocker / "sub"))
        assert res.returncode == 2, res.stderr
        assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
        assert str(blocker / "sub") in res.stderr


def test_existing_output_is_not_overwritten_without_flag(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    res = _cli("synth-data", str(out), "--durations", "20")
    assert res.returncode == 2 and "overwrite" in res.stderr
    assert (out / "keep.txt").read_text() == "mine"


def test_yodas2_layout_is_the_published_one_and_answerable(yodas2_dir):
    import pyarrow.parquet as pq

    from vlat.data.records import parse_inline_question, parse_label

    assert sorted(p.name for p in yodas2_dir.iterdir()) == ["0.5", "1"]
    assert sorted(p.name for p in (yodas2_dir / "1").iterdir()) == [
        "test-00000-of-00001.parquet",
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    label_types = set()
    sentence_sides = set()
    for path in sorted(yodas2_dir.glob("*/*.parquet")):
        table = pq.read_table(path)
        assert table.column_names == ["audio_array", "sampling_rate", "question", "label"]
        label_types.add(str(table.schema.field("label").type))
        rows = table.to_pylist()
        for i in range(0, len(rows), 2):  # a recording's two questions: consecutive rows repeating its audio
            group = rows[i : i + 2]
            assert all(r["audio_array"] == group[0]["audio_array"] for r in group)
            heard = _heard_with(decode_events(np.asarray(group[0]["audio_array"], np.float32), 16000))
            for r, kind in zip(group, ["marker", "pitch"], strict=True):
                sentence_sides.add(r["question"].rstrip().endswith("statement."))
                stem, options = parse_inline_question(r["question"], "r")
                assert options[parse_label(r["label"], "r")] == heard[kind]
    assert label_types == {"string", "int64"} and sentence_sides == {True, False}


def test_fixed_options_are_the_pitches_in_order_and_answerable(tmp_path):
    # the base model's task: the four pitches as options, always in the same order
    cfg = SynthConfig(durations=(30.0,), videos_per_duration=3, segments_per_video=2, fixed_options=True, seed=5)
    d = write_synth_dataset(tmp_path / "d", cfg)
    rows = _rows(d)["train"] + _rows(d)["test"]
    assert len(rows) == 6 * 2
    by_audio = {}
    for row in rows:
        by_audio.setdefault(row["audio"], []).append(row)
    for audio, qs in by_audio.items():
        wav, sr = sf.read(d / audio, dtype="float32")
        events = decode_events(wav, sr)
        assert {tone for tone, _ in events} <= {"amber", "blue", "coral", "dune"}
        heard = _heard_with(events)
        for q in qs:
            assert q["choices"] == (
                ["bell", "whistle", "chime", "horn"] if q["kind"] == "marker" else ["low", "mid", "high", "top"]
            )
            assert q["choices"][q["answer"]] == heard[q["kind"]]


def test_settings_are_checked():
    import pytest

    for bad, field in [
        (dict(durations=(4.0,)), "durations"),
        (dict(durations=()), "durations"),
        (dict(test_fraction=0.5, validation_fraction=0.6), "validation_fraction"),
        (dict(validation_fraction=-0.1), "validation_fraction"),
        (dict(test_fraction=1.5), "test_fraction"),
    ]:
        with pytest.raises(ValueError, match=field):
            SynthConfig(**bad).validate()


def test_smoke_fixtures_are_rebuilt_when_made_with_other_settings(tmp_path, monkeypatch):
    # an older .smoke (another task, another base model) must not be reused silently; today's is kept
    import vlat.testing.base_model as base_model
    from vlat.testing.synth_data import SMOKE_DATA, write_smoke_fixtures

    built = []

    def fake_base_model(out, cfg, progress):  # training is tested in test_base_model; here only the decision
        out.mkdir(parents=True, exist_ok=True)
        (out / base_model.RECORD).write_text(json.dumps({"config": json.loads(json.dumps(asdict(cfg)))}))
        built.append(out)

    monkeypatch.setattr(base_model, "write_base_model", fake_base_model)
    root = tmp_path / ".smoke"
    old = write_synth_dataset(root / "synth-data", SynthConfig(durations=(20.0,), videos_per_duration=2))
    (root / "base-model").mkdir()
    (root / "base-model" / base_model.RECORD).write_text(json.dumps({"config": {"steps": 1}}))

    write_smoke_fixtures(root, progress=lambda m: None)
    assert len(built) == 1 and not (old / "train.jsonl").exists()  # both rebuilt
    assert sorted(p.name for p in (root / "synth-data").iterdir()) == ["0.5", "1", "2"]
    assert json.loads((root / "synth-data.json").read_text())["fixed_options"] is SMOKE_DATA.fixed_options
    stamp = (root / "synth-data" / "2" / "train-00000-of-00002.parquet").stat().st_mtime_ns

    write_smoke_fixtures(root, progress=lambda m: None)
    assert len(built) == 1  # today's base model is kept
    assert (root / "synth-data" / "2" / "train-00000-of-00002.parquet").stat().st_mtime_ns == stamp
