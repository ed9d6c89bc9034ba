"""A streaming, length-bucketed MCQA batch iterator for Lightning (an ``IterableDataset`` that yields batches).

Per data pass: the source's units (parquet row groups, JSON tables; :mod:`vlat.data.sources`) -> this worker's exact
share of rows (:mod:`vlat.data.plan`, the only place that decides sharding) -> windows of rows, normalized to
metadata records (bad and filtered rows counted; inline audio featurised once per recording per window, as it is
read) -> sorted by duration and cut into batches -> audio files decoded and featurised once per recording per batch ->
collated. Nothing else shards: the DataLoader's workers and DDP ranks are
both handled by the plan, so every question is delivered exactly once per pass.

Bad samples are skipped and counted by reason; counts ride along with each batch (``skipped``, ``filtered``) so the
training process can log them whatever process decoded the audio. Empty batches (``n == 0``) keep every worker and
rank at the same batch count.
"""

from __future__ import annotations

import gc
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import count, islice
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from vlat.audio.compression import AudioCompression
from vlat.data.buckets import DEFAULT_TOLERANCE, bucket_of, requested
from vlat.data.collate import MCQACollator, shared
from vlat.data.plan import batches_before, pass_rng, plan_pass, row_order
from vlat.data.prompts import EncodedAudio, build_mcqa_example, encode_recording
from vlat.data.records import ColumnMapping, Record, in_holdout, normalize
from vlat.data.sources import Source, SourceError, read_rows, resolve, warm_arrow_to_numpy
from vlat.errors import BadSampleError

log = logging.getLogger("vlat.data")


@dataclass
class StreamSpec:
    source: str
    split: str
    columns: ColumnMapping = field(default_factory=ColumnMapping)
    lengths: list[float] | None = None  # minutes: clip-length folders to read, and the buckets kept (buckets.py)
    length_tolerance: float = DEFAULT_TOLERANCE  # without folders: |duration - L| <= tolerance * L puts it in L
    holdout_fraction: float = 0.0  # >0: split one table by video (by recording when the data names no video)
    holdout_side: str = "keep"  # "keep" = groups not held out, "holdout" = held-out groups only
    seed: int = 0

    def buckets(self, source: Source) -> list[float]:
        """The buckets this spec reports on (:func:`vlat.data.buckets.requested`)."""
        return requested(self.lengths, source.folder_lengths)


def iter_records(
    spec: StreamSpec,
    source: Source,
    unit,
    rows: Iterator[dict],
    on_bad: Callable[[BadSampleError], None],
    on_filtered: Callable[[Record], None] = lambda rec: None,
    max_audio_seconds: float | None = None,
    need_bucket: bool = True,
) -> Iterator[Record]:
    """Normalize the rows of ``unit``, skipping bad ones (``on_bad``), those over ``max_audio_seconds``
    (``too_long``, from the duration the header or the sample count gives: nothing is decoded), and leaving out
    (``on_filtered``) those in no requested length bucket (:mod:`vlat.data.buckets`; kept with no bucket when
    ``need_bucket`` is false and no lengths were asked for: training on everything) and those on the other side
    of the holdout split. Each record gets its ``bucket``."""
    base = None if source.hub else Path(unit.path).parent
    buckets = spec.buckets(source)
    for row in rows:
        try:
            rec = normalize(row, spec.columns, base)
            if max_audio_seconds is not None and rec.duration > max_audio_seconds:
                raise BadSampleError(
                    rec.id, "too_long", f"audio is {rec.duration:.1f} s, over max_audio_seconds={max_audio_seconds:g}"
                )
        except BadSampleError as e:
            on_bad(e)
            continue
        rec.bucket = bucket_of(rec.duration, unit.folder_minutes, buckets, spec.length_tolerance)
        if rec.bucket is None and (need_bucket or spec.lengths is not None):
            on_filtered(rec)
            continue
        if spec.holdout_fraction > 0:
            held = in_holdout(rec.video_id, spec.holdout_fraction, spec.seed)
            if held != (spec.holdout_side == "holdout"):
                on_filtered(rec)
                continue
        yield rec


class MCQABatchStream(IterableDataset):
    """Yields collated batches; see the module docstring. ``infinite`` repeats passes (training by ``max_steps``).

    ``epoch``, ``skip_plans`` and ``first_pass`` position the stream: it starts at data pass ``first_pass`` (None:
    ``epoch``), past the ``skip_plans`` batches this rank already consumed from there. A data module sets
    ``progress`` to a callable returning the three, read when iteration starts. A finite stream whose first pass
    lies beyond its epoch yields nothing (the rest of that epoch was given up, see the data module's
    ``restart_pass``).
    """

    def __init__(
        self,
        spec: StreamSpec,
        processor,
        batch_size: int,
        *,
        train: bool,
        bucket_buffer: int = 256,
        buffer_mib: float = 512,
        max_audio_seconds: float | None = 900.0,
        infinite: bool = False,
        world_size: int = 1,
        rank: int = 0,
        max_logged_errors: int = 5,
        source: Source | None = None,
        audio_compression: AudioCompression | str | None = None,
    ):
        super().__init__()
        self.audio_compression = AudioCompression.parse(audio_compression)  # sets the prompts' audio token count
        self.spec, self.processor, self.batch_size, self.train = spec, processor, batch_size, train
        self.bucket_buffer, self.buffer_bytes = max(bucket_buffer, 1), int(buffer_mib * 2**20)
        self.max_audio_seconds, self.infinite = max_audio_seconds, infinite
        self.world_size, self.rank = world_size, rank
        self.source = source or resolve(spec.source, spec.split, spec.lengths)
        if self.source.num_rows == 0:
            raise SourceError(f"{spec.source}: split {spec.split!r} has no rows")
        self.epoch, self.skip_plans, self.first_pass = 0, 0, None
        self.progress: Callable[[], tuple[int, int, int | None]] | None = None
        self.max_logged_errors = max_logged_errors
        self._log_budget = max_logged_errors
        self.collate = MCQACollator(
            processor.tokenizer.pad_token_id, padding_side="right" if train else "left", share_features=True
        )
        self.assistant_prefix = "" if train else "("
        self._prepare_for_workers()

    def __getstate__(self) -> dict:  # spawned workers get the position as plain numbers
        state = dict(self.__dict__)
        state["epoch"], state["skip_plans"], state["first_pass"] = self._position()
        state["progress"] = None
        return state

    def _prepare_for_workers(self) -> None:
        """Pay here, once, the one-time costs that every DataLoader worker (forked anew each epoch) would otherwise
        pay on its first rows: pyarrow's first numpy conversion imports pandas (0.2 s of CPU), and the first example
        compiles the chat template and imports the model's length formula (0.04 s; ``docs/benchmarks.md``)."""
        if not all(u.random_access for u in self.source.units):
            warm_arrow_to_numpy()
        silence = np.zeros(self.processor.feature_extractor.sampling_rate, dtype=np.float32)
        build_mcqa_example(
            self.processor, silence, "?", ["a", "b", "c", "d"], 0, audio_compression=self.audio_compression
        )

    def _position(self) -> tuple[int, int, int | None]:
        return self.progress() if self.progress is not None else (self.epoch, self.skip_plans, self.first_pass)

    def buckets(self) -> list[float]:
        """The length buckets this stream reports on (validation accuracy is logged per bucket)."""
        return self.spec.buckets(self.source)

    # -- planning (metadata only) ------------------------------------------------------------------------------
    def _plan(self, pass_idx: int, slot: int, n_slots: int):
        return plan_pass(
            self.source.units,
            slot=slot,
            n_slots=n_slots,
            batch_size=self.batch_size,
            bucket_buffer=self.bucket_buffer,
            buffer_bytes=self.buffer_bytes,
            seed=self.spec.seed,
            pass_idx=pass_idx,
            shuffle=self.train,
        )

    def _windows(self, plan, pass_idx: int) -> Iterator[tuple[int, int, int, Iterator[dict]]]:
        """(unit, lo, hi, rows) of each window, one reader per unit segment (rows read in order, once); the caller
        exhausts each window's rows before the next."""
        reader, at = None, None
        for u, lo, hi in plan.windows:
            unit = self.source.units[u]
            if reader is None or at != (u, lo):
                order = row_order(unit, self.spec.seed, pass_idx, self.train, u)
                ordered = order[lo:] if order is not None else None
                reader = read_rows(self.source, unit, ordered)
                if order is None:
                    reader = islice(reader, lo, None)
            yield u, lo, hi, islice(reader, hi - lo)
            at = (u, hi)

    def _batches_of_window(
        self, u: int, lo: int, rows: Iterator[dict], n_batches: int, pass_idx: int, bad: Counter, encode: bool = True
    ):
        """Plans (lists of records) of one window: exactly ``n_batches``, the tail empty when rows were dropped."""
        unit = self.source.units[u]
        filtered = [0]

        def note_filtered(rec: Record) -> None:
            filtered[0] += 1

        encoded: dict[str, EncodedAudio | BadSampleError] = {}

        def encode_inline(recs: Iterator[Record]) -> Iterator[Record]:
            """Inline audio (repeated in a recording's five rows) featurised once per window, as it is read: the
            window holds each recording's features (smaller than its waveform), and the rows' arrow batches are
            freed as the window is read. Audio files stay on disk until their batch is built."""
            for rec in recs:
                if encode and isinstance(rec.audio, tuple):
                    if rec.recording_id not in encoded:
                        encoded[rec.recording_id] = self._encode(rec)
                    rec.audio = encoded[rec.recording_id]
                yield rec

        recs = list(
            encode_inline(
                iter_records(
                    self.spec,
                    self.source,
                    unit,
                    rows,
                    lambda e: self._note_bad(e, bad),
                    note_filtered,
                    self.max_audio_seconds,
                    need_bucket=not self.train,
                )
            )
        )
        if self.train:
            pass_rng(self.spec.seed, pass_idx, f"w{u}:{lo}").shuffle(recs)
        recs.sort(key=lambda r: r.duration)  # stable: equal durations keep the shuffled order
        plans = [recs[i : i + self.batch_size] for i in range(0, len(recs), self.batch_size)]
        plans += [[] for _ in range(n_batches - len(plans))]
        if self.train:
            pass_rng(self.spec.seed, pass_idx, f"b{u}:{lo}").shuffle(plans)
        return plans, filtered[0]

    def plans(self, pass_idx: int = 0) -> Iterator[list[Record]]:
        """Batch plans of one whole pass as one worker would see them (metadata only; used by benchmarks)."""
        plan = self._plan(pass_idx, 0, 1)
        for (u, lo, _hi, rows), n in zip(self._windows(plan, pass_idx), plan.batches, strict=True):
            yield from self._batches_of_window(u, lo, rows, n, pass_idx, Counter(), encode=False)[0]

    # -- materialisation ---------------------------------------------------------------------------------------
    def _note_bad(self, e: BadSampleError, bad: Counter) -> None:
        """Count a skipped sample by reason; log the first ``max_logged_errors`` of an iteration."""
        bad[e.reason] += 1
        if self._log_budget > 0:
            self._log_budget -= 1
            log.warning("skipping %s", e)

    def _encode(self, rec: Record) -> EncodedAudio | BadSampleError:
        """A recording's features, in a worker made in shared memory once: the batches of its questions carry them
        by reference (:class:`vlat.data.collate.MCQACollator` ``share_features``)."""
        try:
            enc = encode_recording(self.processor, rec.audio, max_audio_seconds=self.max_audio_seconds, name=rec.id)
        except BadSampleError as e:
            return e
        return EncodedAudio(shared(enc.features), shared(enc.feature_mask), enc.window_tokens)

    def _build(self, plan: list[Record], bad: Counter) -> dict:
        """Featurise each recording once (inline audio already was, per window), then one example per question."""
        encoded: dict[str, EncodedAudio | BadSampleError] = {}
        examples = []
        for rec in plan:
            audio = rec.audio
            if not isinstance(audio, EncodedAudio | BadSampleError):
                if rec.recording_id not in encoded:
                    encoded[rec.recording_id] = self._encode(rec)
                audio = encoded[rec.recording_id]
            try:
                if isinstance(audio, BadSampleError):
                    raise audio
                ex = build_mcqa_example(
                    self.processor,
                    audio,
                    rec.question,
                    rec.options,
                    rec.answer if self.train else None,
                    assistant_prefix=self.assistant_prefix,
                    audio_compression=self.audio_compression,
                    name=rec.id,
                )
            except BadSampleError as e:
                self._note_bad(e, bad)
                continue
            ex.update(
                id=rec.id,
                video_id=rec.video_id,
                recording_id=rec.recording_id,
                answer=rec.answer,
                duration=rec.duration,
                bucket=rec.bucket,
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
        if info is not None:
            # a forked worker inherits the training process's objects (the model's and every library's); its
            # garbage collector would walk them all and copy every page it touches (0.27 s per worker per pass in
            # bench/dataloader.py, whose process holds only the processor): move them out of its sight (a list
            # splice, no traversal). The training process's own collector is untouched.
            gc.freeze()
        epoch, consumed, first_pass = self._position()
        first_pass = epoch if first_pass is None else first_pass
        # the DataLoader restarts its round-robin at worker 0: after `consumed` batches, worker w continues the
        # stream that worker (w + consumed) % workers was producing
        role = (worker + consumed) % workers
        n_slots, slot = self.world_size * workers, self.rank * workers + role
        skip = batches_before(consumed, role, workers)
        self._log_budget = self.max_logged_errors
        for pass_idx in count(first_pass) if self.infinite else (epoch,) if first_pass <= epoch else ():
            plan = self._plan(pass_idx, slot, n_slots)
            if skip >= plan.total:  # a whole pass consumed before a resume: nothing to read
                skip -= plan.total
                continue
            yielded = 0
            meta = {"data_pass": pass_idx, "epoch": epoch, "buckets": self.buckets()}
            for (u, lo, _hi, rows), n in zip(self._windows(plan, pass_idx), plan.batches, strict=True):
                if skip >= n:  # consumed before a resume; its counts were reported then
                    for _ in rows:  # read past it (nothing decoded)
                        pass
                    skip -= n
                    yielded += n
                    continue
                bad: Counter = Counter()
                plans, filtered = self._batches_of_window(u, lo, rows, n, pass_idx, bad)
                for batch_plan in plans:
                    if skip:
                        skip -= 1
                        bad.clear()  # reported with this window's first batch, before the resume
                        filtered = 0
                        continue
                    batch = self._build(batch_plan, bad) if batch_plan else {"n": 0}
                    batch.update(meta, skipped=dict(bad), filtered=filtered)
                    bad.clear()  # the same counter the planner writes to: never rebind it
                    filtered = 0
                    yield batch
                yielded += n
            for _ in range(plan.total - yielded):  # padding: every worker of every rank yields plan.total batches
                if skip:
                    skip -= 1
                    continue
                yield {"n": 0, "skipped": {}, "filtered": 0, **meta}


def batch_size_of(batch: dict) -> int:
    return int(batch.get("n", 0))


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
