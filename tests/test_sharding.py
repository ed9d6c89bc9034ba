"""Every question exactly once per pass, for any DataLoader workers x DDP ranks x source; exact mid-epoch resume."""

from collections import Counter
from itertools import islice

import pytest
from torch.utils.data import DataLoader

from vlat.data import ColumnMapping, MCQABatchStream, StreamSpec, normalize, read_rows, resolve
from vlat.data.plan import Segment, batches_before, plan_pass, segments, slot_ranges, window_rows
from vlat.data.sources import Unit
from vlat.testing.synth_data import QUESTIONS


def _unit(rows: int, bytes_per_row: float = 0.0, rg: int | None = 0) -> Unit:
    return Unit("f", "f", rg, rows, 0, bytes_per_row, None)


def test_plan_arithmetic_by_hand():
    assert slot_ranges(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)]
    assert slot_ranges(2, 4) == [(0, 1), (1, 2), (2, 2), (2, 2)]
    # units of 4, 3 and 5 rows taken in the order 2, 0, 1: global rows 3..9 = unit2[3:5] + unit0[0:4] + unit1[0:1]
    assert segments([4, 3, 5], [2, 0, 1], 3, 10) == [Segment(2, 3, 5), Segment(0, 0, 4), Segment(1, 0, 1)]
    # 512 MiB of 100-MiB rows: 5 rows a window; never below one batch, never above bucket_buffer
    assert window_rows(_unit(9, 100 * 2**20), 256, 512 * 2**20, 2) == 5
    assert window_rows(_unit(9, 900 * 2**20), 256, 512 * 2**20, 2) == 2
    assert window_rows(_unit(9, 0.0, None), 16, 512 * 2**20, 4) == 16
    # 3 slots over units of 7 and 2 rows, batch 2, windows of 4: slot rows 0-3 | 3-6 | 6-9
    units = (_unit(7, 0.0, 0), _unit(2, 0.0, 1))
    plans = [
        plan_pass(
            units, slot=s, n_slots=3, batch_size=2, bucket_buffer=4, buffer_bytes=1, seed=0, pass_idx=0, shuffle=False
        )
        for s in range(3)
    ]
    assert [p.windows for p in plans] == [[(0, 0, 3)], [(0, 3, 6)], [(0, 6, 7), (1, 0, 2)]]
    assert [p.batches for p in plans] == [[2], [2], [1, 1]] and {p.total for p in plans} == {2}
    # round-robin over 3 equal workers: of the first 7 batches, workers 0, 1, 2 gave 3, 2, 2
    assert [batches_before(7, w, 3) for w in range(3)] == [3, 2, 2]


def _dataset_ids(source: str, split: str) -> Counter:
    src = resolve(source, split)
    return Counter(
        normalize(r, ColumnMapping(), None if src.hub else None).id for u in src.units for r in read_rows(src, u)
    )


def _epoch_ids(processor, source, split, train, workers, world, skip=0, epoch=0) -> list[list[str]]:
    """Question ids each rank's DataLoader delivers in one pass, in order."""
    out = []
    for rank in range(world):
        stream = MCQABatchStream(
            StreamSpec(str(source), split), processor, 3, train=train, world_size=world, rank=rank, bucket_buffer=6
        )
        stream.epoch, stream.skip_plans = epoch, skip
        batches = list(DataLoader(stream, batch_size=None, num_workers=workers))
        out.append([i for b in batches for i in b.get("id", [])] + [f"<{len(batches)} batches>"])
    return out


@pytest.mark.parametrize("layout", ["one_file", "shards"])
@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("workers", [0, 1, 2, 4])
def test_every_question_exactly_once(workers, world, layout, processor, yodas2_dir, yodas2_one_file):
    source = yodas2_one_file if layout == "one_file" else yodas2_dir
    for split, train in (("train", True), ("test", False)):
        per_rank = _epoch_ids(processor, source, split, train, workers, world)
        counts = [ids.pop() for ids in per_rank]
        assert len(set(counts)) == 1, f"ranks yield different batch counts: {counts}"  # DDP never runs out unevenly
        delivered = Counter(i for ids in per_rank for i in ids)
        assert delivered == _dataset_ids(str(source), split), (split, workers, world)


def test_single_file_decoding_is_spread_over_workers(processor, yodas2_one_file):
    src = resolve(str(yodas2_one_file), "train")
    assert len(src.units) == 1  # one file, one row group
    stream = MCQABatchStream(StreamSpec(str(yodas2_one_file), "train"), processor, 3, train=True)
    seen = Counter()
    for b in DataLoader(stream, batch_size=None, num_workers=2):
        seen.update(i.split("#")[0] for i in b.get("id", []))
    # both workers delivered questions (the batches alternate between them); none is dropped
    assert sum(seen.values()) == src.num_rows
    per_worker = [[], []]
    for j, b in enumerate(DataLoader(stream, batch_size=None, num_workers=2)):
        per_worker[j % 2].extend(b.get("id", []))
    assert per_worker[0] and per_worker[1] and not set(per_worker[0]) & set(per_worker[1])


def _rank_batches(processor, source, workers, world, rank, position) -> list[tuple]:
    """Batch id tuples one rank's DataLoader delivers from ``position`` = (epoch, batches already consumed, first
    pass)."""
    stream = MCQABatchStream(
        StreamSpec(str(source), "train", seed=5), processor, 3, train=True, world_size=world, rank=rank, bucket_buffer=6
    )
    stream.progress = lambda: position  # what the data module hands over on resume
    return [tuple(b.get("id", ())) for b in DataLoader(stream, batch_size=None, num_workers=workers)]


@pytest.mark.parametrize("workers,world", [(0, 1), (2, 1), (2, 2), (4, 2)])
def test_resume_mid_epoch_delivers_exactly_the_rest(workers, world, processor, yodas2_dir):
    for epoch in (0, 1):  # a later epoch has its own order, and resumes within it
        full = [_rank_batches(processor, yodas2_dir, workers, world, rank, (epoch, 0, None)) for rank in range(world)]
        assert full[0]
        for k in (1, 3, len(full[0]) - 1):
            for rank in range(world):
                rest = _rank_batches(processor, yodas2_dir, workers, world, rank, (epoch, k, None))
                assert rest == full[rank][k:], (epoch, k, rank)


def test_order_is_deterministic_per_seed_and_changes_per_epoch(processor, yodas2_dir):
    def order(seed, epoch):
        s = MCQABatchStream(StreamSpec(str(yodas2_dir), "train", seed=seed), processor, 3, train=True)
        s.epoch = epoch
        return [i for b in s for i in b.get("id", [])]

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(1, 0) and order(0, 0) != order(0, 1)
    assert sorted(order(0, 0)) == sorted(order(0, 1))


def test_infinite_stream_with_more_workers_than_rows_never_hangs(processor, yodas2_one_file):
    stream = MCQABatchStream(StreamSpec(str(yodas2_one_file), "test"), processor, 4, train=True, infinite=True)
    batches = list(islice(DataLoader(stream, batch_size=None, num_workers=4), 12))
    passes = Counter(b["data_pass"] for b in batches)
    assert (
        len(batches) == 12 and len(passes) >= 2
    )  # several passes of one recording's questions over 4 workers, no hang
    per_pass = Counter()
    for b in batches:
        per_pass[b["data_pass"]] += b["n"]
    assert per_pass[0] == len(QUESTIONS)  # the test split: one recording
