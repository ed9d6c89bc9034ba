"""LightningDataModule for YODAS2-MCQA (hub streaming or local files) and the synthetic stand-in."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from vlat.audio.compression import AudioCompression
from vlat.data.buckets import DEFAULT_TOLERANCE
from vlat.data.collate import expand_features
from vlat.data.records import ColumnMapping
from vlat.data.sources import Source, resolve
from vlat.data.stream import MCQABatchStream, StreamSpec
from vlat.errors import ConfigError
from vlat.models.loading import check_model_source, load_processor


class YODAS2MCQADataModule(L.LightningDataModule):
    """Streams MCQA batches: length-bucketed and shuffled for training, left-padded for validation scoring.

    Args:
        source: hub dataset id (``yophis/yodas2-mcqa``, streamed), a local mirror of its layout (clip-length folders
            ``2/``, ``5/``, ``10/`` of ``<split>-*.parquet`` shards), a local directory with ``<split>.jsonl`` /
            ``.parquet`` / ``.json``, or one such file (see :mod:`vlat.data.sources`).
        model_name_or_path: where the processor comes from (linked to the model's in ``train.py``).
        train_split, val_split: split names; ``val_split: null`` disables validation.
        columns: column mapping / layout (see :class:`vlat.data.records.ColumnMapping`).
        train_lengths, val_lengths: length buckets in minutes to keep (:mod:`vlat.data.buckets`: clip-length folders
            to read; without folders, recordings whose real duration is within ``length_tolerance`` of a length);
            null trains on every recording and validates on every length the source has (its folders, else the
            standard lengths). Validation accuracy is logged per bucket.
        length_tolerance: without clip-length folders, a recording is in bucket L when its duration is within this
            share of L (0.1: the 2-minute bucket holds 108-132 s); others are left out and counted.
        holdout_fraction: when > 0, validation comes from ``train_split`` itself, split by video (by recording when
            the data names no video, as in the published YODAS2-MCQA); no group is on both sides.
        batch_size, val_batch_size: samples per batch (paper: 8; use ``accumulate_grad_batches`` with 1).
        bucket_buffer: rows (metadata) sorted by duration before being cut into batches (keeps padding low);
            training shuffles row groups / files per epoch and rows within these windows.
        buffer_mib: cap on a window's rows by their stored size (inline audio), per DataLoader worker.
        max_audio_seconds: longer recordings are skipped and counted.
        num_workers: DataLoader worker processes (audio decoding and featurisation run there).
        infinite_train: repeat passes over the training data (train by ``max_steps``).
        seed: seed of shuffling and of the video-level split.
        audio_compression: audio tokens per recording in the prompts (linked to ``model.audio_compression`` in
            ``train.py``; :mod:`vlat.audio.compression`).
        restart_pass: on resume, start the next data pass afresh instead of continuing the checkpoint's pass (the
            rest of that pass is not trained on). Needed to resume under another ``num_workers``, number of ranks,
            batch size or data settings: the position inside a pass is counted in batches of its layout, so
            continuing it under another layout would repeat some questions and skip others (refused otherwise).
    """

    def __init__(
        self,
        source: str = "yophis/yodas2-mcqa",
        model_name_or_path: str = "Qwen/Qwen2-Audio-7B-Instruct",
        train_split: str = "train",
        val_split: str | None = "test",
        columns: ColumnMapping | None = None,
        train_lengths: list[float] | None = None,
        val_lengths: list[float] | None = None,
        length_tolerance: float = DEFAULT_TOLERANCE,
        holdout_fraction: float = 0.0,
        batch_size: int = 8,
        val_batch_size: int = 8,
        bucket_buffer: int = 256,
        buffer_mib: float = 512,
        max_audio_seconds: float | None = 900.0,
        num_workers: int = 2,
        infinite_train: bool = True,
        seed: int = 0,
        audio_compression: str = "none",
        restart_pass: bool = False,
    ):
        super().__init__()
        checks = [
            ("batch_size", batch_size >= 1, ">= 1"),
            ("val_batch_size", val_batch_size >= 1, ">= 1"),
            ("holdout_fraction", 0.0 <= holdout_fraction < 1.0, "in [0, 1)"),
            ("length_tolerance", 0.0 <= length_tolerance < 1.0, "in [0, 1)"),
            ("bucket_buffer", bucket_buffer >= 1, ">= 1"),
            ("buffer_mib", buffer_mib > 0, "> 0"),
            ("max_audio_seconds", max_audio_seconds is None or max_audio_seconds > 0, "> 0 (or null: no limit)"),
            ("num_workers", num_workers >= 0, ">= 0"),
        ]
        for name, ok, want in checks:
            if not ok:
                raise ConfigError(f"data.{name}: {locals()[name]!r} must be {want}")
        for name, lengths in (("train_lengths", train_lengths), ("val_lengths", val_lengths)):
            if lengths is not None and (not lengths or any(not x > 0 for x in lengths)):
                raise ConfigError(f"data.{name}: {lengths!r} must be null or a list of minutes > 0")
        check_model_source(model_name_or_path, "data.model_name_or_path")
        try:
            AudioCompression.parse(audio_compression)
        except ConfigError as e:
            raise ConfigError(f"data.{e}") from None
        self.save_hyperparameters(ignore=["columns"])
        self.columns = columns or ColumnMapping()
        self.processor = None
        self.sources: dict[str, Source] = {}
        self.epoch = 0  # the training epoch that plans_consumed counts in
        self.first_pass: int | None = None  # the data pass plans_consumed counts from (None: the epoch's first)
        self.plans_consumed = 0  # training batches already used on this rank since then (restored on resume)
        self.data_pass = 0  # the data pass of the last batch used

    def _val_side(self) -> tuple[str, str] | None:
        hp = self.hparams
        if hp.holdout_fraction > 0:
            return hp.train_split, "holdout"
        return (hp.val_split, "keep") if hp.val_split is not None else None

    def setup(self, stage: str) -> None:
        """Resolve the sources (footers only: a bad path, split or length fails here, before any model loads)."""
        hp = self.hparams
        if "train" not in self.sources and stage == "fit":
            self.sources["train"] = resolve(hp.source, hp.train_split, hp.train_lengths)
        if "val" not in self.sources and stage in ("fit", "validate") and self._val_side():
            self.sources["val"] = resolve(hp.source, self._val_side()[0], hp.val_lengths)
        if self.processor is None:
            self.processor = load_processor(hp.model_name_or_path)

    def _spec(self, split: str, lengths, side: str) -> StreamSpec:
        """The stream of one split (``side``: keep / holdout of a video-level split)."""
        hp = self.hparams
        return StreamSpec(
            source=hp.source,
            split=split,
            columns=self.columns,
            lengths=lengths,
            length_tolerance=hp.length_tolerance,
            holdout_fraction=hp.holdout_fraction,
            holdout_side=side,
            seed=hp.seed,
        )

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        world, rank = self._world()
        stream = MCQABatchStream(
            self._spec(hp.train_split, hp.train_lengths, "keep"),
            self.processor,
            hp.batch_size,
            train=True,
            bucket_buffer=hp.bucket_buffer,
            buffer_mib=hp.buffer_mib,
            max_audio_seconds=hp.max_audio_seconds,
            infinite=hp.infinite_train,
            world_size=world,
            rank=rank,
            source=self.sources.get("train"),
            audio_compression=hp.audio_compression,
        )
        stream.progress = self._train_position
        return DataLoader(stream, batch_size=None, num_workers=hp.num_workers)

    def _train_position(self) -> tuple[int, int, int | None]:
        """(epoch, batches already consumed, the pass they count from), read by the stream when an epoch's
        iteration starts."""
        epoch = self.trainer.current_epoch if self.trainer is not None else self.epoch
        if epoch != self.epoch:
            return epoch, 0, None
        return epoch, self.plans_consumed, self.first_pass

    def val_dataloader(self) -> DataLoader | list:
        hp = self.hparams
        if self._val_side() is None:
            return []
        split, side = self._val_side()
        world, rank = self._world()
        stream = MCQABatchStream(
            self._spec(split, hp.val_lengths, side),
            self.processor,
            hp.val_batch_size,
            train=False,
            bucket_buffer=hp.bucket_buffer,
            buffer_mib=hp.buffer_mib,
            max_audio_seconds=hp.max_audio_seconds,
            world_size=world,
            rank=rank,
            source=self.sources.get("val"),
            audio_compression=hp.audio_compression,
        )
        return DataLoader(stream, batch_size=None, num_workers=hp.num_workers)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """On the device: each sample's audio windows from its recording's features (sent once per batch), and the
        position in the epoch that a resume continues from."""
        batch = expand_features(batch)
        if self.trainer is not None and self.trainer.training:
            if batch.get("epoch", self.epoch) != self.epoch:  # first batch of a new epoch
                self.epoch, self.plans_consumed, self.first_pass = batch["epoch"], 0, None
            self.plans_consumed += 1
            self.data_pass = batch.get("data_pass", self.data_pass)
        return batch

    def _layout(self) -> dict:
        """What the position inside a pass is counted in: the same rows, cut into the same batches, dealt to the
        same (rank, worker) slots."""
        keys = ("source", "train_split", "train_lengths", "length_tolerance", "holdout_fraction", "batch_size")
        keys += ("bucket_buffer",)
        keys += ("buffer_mib", "seed", "num_workers")
        ranks = self.trainer.world_size if self.trainer is not None else 1
        return {**{k: self.hparams[k] for k in keys}, "ranks": ranks}

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "plans_consumed": self.plans_consumed,
            "first_pass": self.first_pass,
            "data_pass": self.data_pass,
            "layout": self._layout(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state.get("epoch", 0))
        self.plans_consumed = int(state.get("plans_consumed", 0))
        self.first_pass = state.get("first_pass")
        self.data_pass = int(state.get("data_pass", self.epoch))
        if self.hparams.restart_pass:  # the next pass, from its start (a finite epoch gives up the rest of its own)
            self.first_pass = self.data_pass + 1
            self.plans_consumed = 0
            return
        saved, now = state.get("layout"), self._layout()
        if saved is not None and saved != now and self.plans_consumed:
            changed = ", ".join(f"{k} {saved.get(k)!r} -> {v!r}" for k, v in now.items() if saved.get(k) != v)
            raise ConfigError(
                f"data: the checkpoint is {self.plans_consumed} batches into a data pass counted under other "
                f"settings ({changed}); continuing it would repeat some questions and skip others. Resume with the "
                "checkpoint's settings, or add --data.restart_pass true to start the next data pass afresh"
            )
