"""A streaming, length-bucketed MCQA batch iterator for Lightning (an ``IterableDataset`` that yields batches).

Order of work per data pass (deterministic for ``seed`` and pass number):
rows -> normalized records (metadata only) -> bucket filter -> shard (rank x worker) -> shuffle buffer (training)
-> length bucketing (buffer of ``bucket_buffer`` records sorted by duration, cut into batches, batch order shuffled)
-> *batch plan*. Only then is audio decoded, so resuming skips already-consumed plans cheaply.

Bad samples (missing fields, unreadable / over-long audio, bad options) are skipped and counted by reason; counts
ride along with each batch (``skipped``) so the training process can log them whatever process decoded the audio.
A plan whose samples are all bad is yielded as an empty batch (``n == 0``) to keep plan indices aligned.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import count

import torch
from torch.utils.data import IterableDataset, get_worker_info

from vlat.collate import MCQACollator
from vlat.data.records import ColumnMapping, Record, in_holdout, nearest_bucket, normalize, open_rows
from vlat.errors import BadSampleError
from vlat.prompts import build_mcqa_example

log = logging.getLogger("vlat.data")


@dataclass
class StreamSpec:
    source: str
    split: str
    columns: ColumnMapping = field(default_factory=ColumnMapping)
    lengths: list[float] | None = None  # minutes; keep records whose nearest bucket is listed (None = all)
    bucket_grid: list[float] = field(default_factory=lambda: [1.0, 2.0, 5.0, 10.0])
    holdout_fraction: float = 0.0  # video-level split of one table: >0 keeps train-side (or held-out) videos
    holdout_side: str = "keep"  # "keep" = videos not held out, "holdout" = held-out videos only
    seed: int = 0


def iter_records(spec: StreamSpec, on_bad: Callable[[BadSampleError], None]) -> Iterator[Record]:
    rows, base = open_rows(spec.source, spec.split, spec.columns.audio)
    grid = sorted(set(spec.bucket_grid) | set(spec.lengths or []))
    for row in rows:
        try:
            rec = normalize(row, spec.columns, base)
        except BadSampleError as e:
            on_bad(e)
            continue
        if spec.lengths is not None and nearest_bucket(rec.duration, grid) not in spec.lengths:
            continue
        if spec.holdout_fraction > 0:
            held = in_holdout(rec.video_id, spec.holdout_fraction, spec.seed)
            if held != (spec.holdout_side == "holdout"):
                continue
        yield rec


class MCQABatchStream(IterableDataset):
    """Yields collated batches; see the module docstring. ``infinite`` repeats passes (training by ``max_steps``)."""

    def __init__(
        self,
        spec: StreamSpec,
        processor,
        batch_size: int,
        *,
        train: bool,
        shuffle_buffer: int = 1000,
        bucket_buffer: int = 256,
        max_audio_seconds: float | None = 900.0,
        infinite: bool = False,
        world_size: int = 1,
        rank: int = 0,
        max_logged_errors: int = 5,
    ):
        super().__init__()
        self.spec, self.processor, self.batch_size, self.train = spec, processor, batch_size, train
        self.shuffle_buffer, self.bucket_buffer = shuffle_buffer, max(bucket_buffer, batch_size)
        self.max_audio_seconds, self.infinite = max_audio_seconds, infinite
        self.world_size, self.rank = world_size, rank
        self.skip_plans = 0  # plans already consumed (resume); set by the data module before iterating
        self.max_logged_errors = max_logged_errors
        self._log_budget = max_logged_errors
        self.collate = MCQACollator(processor.tokenizer.pad_token_id, padding_side="right" if train else "left")
        self.assistant_prefix = "" if train else "("

    # -- planning (metadata only) ------------------------------------------------------------------------------
    def plans(
        self, pass_idx: int = 0, shard: int = 0, n_shards: int = 1, bad: Counter | None = None
    ) -> Iterator[list[Record]]:
        """Batch plans (lists of records) of one data pass, from metadata only: no audio is decoded."""
        bad = Counter() if bad is None else bad
        rng = random.Random(f"{self.spec.seed}:{pass_idx}:{shard}")

        def sharded() -> Iterator[Record]:
            for i, rec in enumerate(iter_records(self.spec, lambda e: self._note_bad(e, bad))):
                if i % n_shards == shard:
                    yield rec

        def shuffled(recs: Iterator[Record]) -> Iterator[Record]:
            if not self.train or self.shuffle_buffer <= 1:
                yield from recs
                return
            buf: list[Record] = []
            for rec in recs:
                buf.append(rec)
                if len(buf) >= self.shuffle_buffer:
                    yield buf.pop(rng.randrange(len(buf)))
            rng.shuffle(buf)
            yield from buf

        def bucketed(recs: Iterator[Record]) -> Iterator[list[Record]]:
            buf: list[Record] = []
            for rec in recs:
                buf.append(rec)
                if len(buf) >= self.bucket_buffer:
                    yield from cut(buf)
                    buf = []
            if buf:
                yield from cut(buf)

        def cut(buf: list[Record]) -> list[list[Record]]:
            buf = sorted(buf, key=lambda r: r.duration)
            batches = [buf[i : i + self.batch_size] for i in range(0, len(buf), self.batch_size)]
            if self.train:
                rng.shuffle(batches)
            return batches

        yield from bucketed(shuffled(sharded()))

    # -- materialisation ---------------------------------------------------------------------------------------
    def _note_bad(self, e: BadSampleError, bad: Counter) -> None:
        """Count a skipped sample by reason; log the first ``max_logged_errors`` of an iteration."""
        bad[e.reason] += 1
        if self._log_budget > 0:
            self._log_budget -= 1
            log.warning("skipping %s", e)

    def _build(self, plan: list[Record], bad: Counter) -> dict:
        examples = []
        for rec in plan:
            try:
                ex = build_mcqa_example(
                    self.processor,
                    rec.audio,
                    rec.question,
                    rec.options,
                    rec.answer if self.train else None,
                    assistant_prefix=self.assistant_prefix,
                    max_audio_seconds=self.max_audio_seconds,
                    name=rec.id,
                )
            except BadSampleError as e:
                self._note_bad(e, bad)
                continue
            grid = self.spec.lengths or self.spec.bucket_grid
            ex.update(
                id=rec.id,
                video_id=rec.video_id,
                answer=rec.answer,
                duration=rec.duration,
                bucket=nearest_bucket(rec.duration, grid),
            )
            examples.append(ex)
        if not examples:
            return {"n": 0}
        batch = self.collate(examples)
        batch["n"] = len(examples)
        return batch

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        n_shards, shard = self.world_size * workers, self.rank * workers + worker
        # the DataLoader interleaves workers round-robin: global plan g comes from worker g % workers
        skip_local = (self.skip_plans - worker + workers - 1) // workers if self.skip_plans > worker else 0
        local = 0
        self._log_budget = self.max_logged_errors
        for pass_idx in count() if self.infinite else range(1):
            bad: Counter = Counter()
            for plan in self.plans(pass_idx, shard, n_shards, bad):
                local += 1
                if local <= skip_local:
                    bad.clear()  # already reported with the batches consumed before the resume
                    continue
                batch = self._build(plan, bad)
                batch["skipped"], batch["data_pass"] = dict(bad), pass_idx
                bad.clear()  # the same counter the planner writes to: never rebind it
                yield batch
            if bad:  # bad rows after the last plan of a pass: an empty batch, counted like any plan
                local += 1
                if local > skip_local:
                    yield {"n": 0, "skipped": dict(bad), "data_pass": pass_idx}


def batch_size_of(batch: dict) -> int:
    return int(batch.get("n", 0))


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
