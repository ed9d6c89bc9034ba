"""LightningDataModule for YODAS2-MCQA (hub streaming or local files) and the synthetic stand-in."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from vlat.data.records import ColumnMapping
from vlat.data.stream import MCQABatchStream, StreamSpec
from vlat.model_loading import load_processor


class YODAS2MCQADataModule(L.LightningDataModule):
    """Streams MCQA batches: length-bucketed and shuffled for training, left-padded for validation scoring.

    Args:
        source: hub dataset id (``yophis/yodas2-mcqa``, streamed), a local directory with ``<split>.jsonl`` /
            ``.parquet`` / ``.json``, or one such file.
        model_name_or_path: where the processor comes from (linked to the model's in ``train.py``).
        train_split, val_split: split names; ``val_split: null`` disables validation.
        columns: column mapping / layout (see :class:`vlat.data.records.ColumnMapping`).
        train_lengths, val_lengths: duration buckets in minutes to keep (nearest bucket of each recording);
            null keeps every length. Validation accuracy is logged per bucket.
        holdout_fraction: when > 0, validation comes from ``train_split`` itself, split at the video level (this
            share of videos held out); no video is on both sides.
        batch_size, val_batch_size: samples per batch (paper: 8; use ``accumulate_grad_batches`` with 1).
        shuffle_buffer: records held for streaming shuffle (training).
        bucket_buffer: records sorted by duration before being cut into batches (keeps padding low).
        max_audio_seconds: longer recordings are skipped and counted.
        num_workers: DataLoader worker processes (audio decoding and featurisation run there).
        infinite_train: repeat passes over the training data (train by ``max_steps``).
        seed: seed of shuffling and of the video-level split.
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
        holdout_fraction: float = 0.0,
        batch_size: int = 8,
        val_batch_size: int = 8,
        shuffle_buffer: int = 1000,
        bucket_buffer: int = 256,
        max_audio_seconds: float = 900.0,
        num_workers: int = 2,
        infinite_train: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        if batch_size < 1 or val_batch_size < 1:
            raise ValueError("batch_size / val_batch_size must be >= 1")
        if not 0.0 <= holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction: {holdout_fraction} is outside [0, 1)")
        self.save_hyperparameters(ignore=["columns"])
        self.columns = columns or ColumnMapping()
        self.processor = None
        self.plans_consumed = 0  # training batches already used in this run (restored on resume)

    def setup(self, stage: str) -> None:
        if self.processor is None:
            self.processor = load_processor(self.hparams.model_name_or_path)

    def _spec(self, split: str, lengths, side: str) -> StreamSpec:
        hp = self.hparams
        return StreamSpec(
            source=hp.source,
            split=split,
            columns=self.columns,
            lengths=lengths,
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
            shuffle_buffer=hp.shuffle_buffer,
            bucket_buffer=hp.bucket_buffer,
            max_audio_seconds=hp.max_audio_seconds,
            infinite=hp.infinite_train,
            world_size=world,
            rank=rank,
        )
        stream.skip_plans = self.plans_consumed
        return DataLoader(stream, batch_size=None, num_workers=hp.num_workers)

    def val_dataloader(self) -> DataLoader | list:
        hp = self.hparams
        if hp.val_split is None and hp.holdout_fraction == 0:
            return []
        split, side = (hp.train_split, "holdout") if hp.holdout_fraction > 0 else (hp.val_split, "keep")
        world, rank = self._world()
        stream = MCQABatchStream(
            self._spec(split, hp.val_lengths, side),
            self.processor,
            hp.val_batch_size,
            train=False,
            bucket_buffer=hp.bucket_buffer,
            max_audio_seconds=hp.max_audio_seconds,
            world_size=world,
            rank=rank,
        )
        return DataLoader(stream, batch_size=None, num_workers=hp.num_workers)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.trainer is not None and self.trainer.training:
            self.plans_consumed += 1
        return batch

    def state_dict(self) -> dict:
        return {"plans_consumed": self.plans_consumed}

    def load_state_dict(self, state: dict) -> None:
        self.plans_consumed = int(state.get("plans_consumed", 0))
