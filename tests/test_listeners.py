"""Reference listeners (vlat/testing/listeners.py): what hearing one window is worth, checked by hand."""

import json

import numpy as np
import soundfile as sf

from vlat.testing.listeners import listen, summarize
from vlat.testing.synth_data import BASE_TASK, SynthConfig, decode_events, write_synth_dataset


def test_listeners_by_hand(tmp_path):
    cfg = SynthConfig(
        durations=(30.0, 120.0), videos_per_duration=4, segments_per_video=1, test_fraction=1.0,
        fixed_options=BASE_TASK.fixed_options, seed=7,
    )  # fmt: skip
    d = write_synth_dataset(tmp_path / "d", cfg)
    rows = [json.loads(x) for x in (d / "test.jsonl").read_text().splitlines()]
    scores = listen(d, "test")
    assert len(scores) == 4 * len(rows)  # four listeners, every question
    by = {(s["listener"], s["segment_id"], s["kind"]): s["score"] for s in scores}
    for q in rows:
        key = (q["segment_id"], q["kind"])
        wav, sr = sf.read(d / q["audio"], dtype="float32")
        slot = next(i for i, (_, heard) in enumerate(decode_events(wav, sr)) if heard)  # the marker's slot
        n_slots = int(q["duration"] // 5)
        assert by[("whole", *key)] == 1.0 and by[("chance", *key)] == 0.25
        # a window of 6 slots: the answer when the marker's slot is inside, a quarter otherwise
        assert by[("first_30s", *key)] == (1.0 if slot < 6 else 0.25), (key, slot)
        assert by[("last_30s", *key)] == (1.0 if slot >= n_slots - 6 else 0.25), (key, slot)
    table = summarize(scores)
    assert set(table) == {"0.5", "2"}
    for name in ("first_30s", "last_30s", "whole"):
        assert table["0.5"][name]["accuracy"] == 1.0  # 30 s: every window is the whole recording
    two = table["2"]["first_30s"]
    assert two["questions"] == 8 and two["recordings"] == 4
    expected = np.mean([by[("first_30s", q["segment_id"], q["kind"])] for q in rows if q["duration"] == 120.0])
    assert two["accuracy"] == expected < 1.0
    assert set(two["by_kind"]) == {"marker", "pitch"}
