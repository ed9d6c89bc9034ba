"""Batching of MCQA examples: pad token sequences, stack every 30-s window of every sample.

Right padding for training (labels line up), left padding for generation and last-token scoring. Windows of all
samples are concatenated in order: Qwen2-Audio runs them through its encoder as one batch and scatters the resulting
audio tokens into the ``<|AUDIO|>`` runs in the same order.

A recording's questions share one features tensor. With ``share_features`` (the training data stream) a batch carries
each recording's features once, by reference (``audio_features``, ``audio_masks``, and ``audio_index``: the recording
of each sample) instead of a copy per question: a DataLoader worker computes them once into shared memory and every
batch that uses them passes a handle. :func:`expand_features` builds the model's ``input_features`` /
``feature_attention_mask`` from them; the data module calls it after the batch reached its device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.utils.data import get_worker_info

from vlat.data.prompts import IGNORE_INDEX

MODEL_KEYS = ("input_ids", "attention_mask", "input_features", "feature_attention_mask", "labels")


def model_inputs(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The keys of ``batch`` that the model's forward takes (a ``share_features`` batch's windows built per sample)."""
    inputs = {k: batch[k] for k in MODEL_KEYS if k in batch}
    if "audio_index" in batch:
        inputs["input_features"], inputs["feature_attention_mask"] = _per_sample(batch)
    return inputs


@dataclass
class MCQACollator:
    pad_token_id: int
    padding_side: Literal["left", "right"] = "right"
    share_features: bool = False  # each recording's features once, by reference (module docstring)

    def __post_init__(self) -> None:
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side: {self.padding_side!r} is not 'left' or 'right'")

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if not examples:
            raise ValueError("cannot collate an empty batch")
        width = max(len(e["input_ids"]) for e in examples)
        bsz = len(examples)
        batch: dict[str, Any] = {
            "input_ids": torch.full((bsz, width), self.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros(bsz, width, dtype=torch.long),
        }
        has_labels = "labels" in examples[0]
        if has_labels:
            batch["labels"] = torch.full((bsz, width), IGNORE_INDEX, dtype=torch.long)
        for i, e in enumerate(examples):
            n = len(e["input_ids"])
            sl = slice(width - n, width) if self.padding_side == "left" else slice(0, n)
            batch["input_ids"][i, sl] = e["input_ids"]
            batch["attention_mask"][i, sl] = e["attention_mask"]
            if has_labels:
                batch["labels"][i, sl] = e["labels"]
        if self.share_features:
            owners: dict[int, dict] = {}  # one example per distinct features tensor, in first-seen order
            for e in examples:
                owners.setdefault(id(e["input_features"]), e)
            place = {key: i for i, key in enumerate(owners)}
            batch["audio_features"] = [e["input_features"] for e in owners.values()]
            batch["audio_masks"] = [e["feature_attention_mask"] for e in owners.values()]
            batch["audio_index"] = [place[id(e["input_features"])] for e in examples]  # ints: no device sync
        else:
            batch["input_features"] = torch.cat([e["input_features"] for e in examples])
            batch["feature_attention_mask"] = torch.cat([e["feature_attention_mask"] for e in examples])
        for key in examples[0]:  # metadata (ids, buckets, answers, ...) rides along as lists
            if key not in batch and key not in MODEL_KEYS:
                batch[key] = [e.get(key) for e in examples]
        return batch


def expand_features(batch: dict[str, Any]) -> dict[str, Any]:
    """A ``share_features`` batch with the model's ``input_features`` / ``feature_attention_mask``: every sample's
    windows, in order, on the device the batch is on. Other batches are returned as they are."""
    if "audio_index" not in batch:
        return batch
    batch["input_features"], batch["feature_attention_mask"] = _per_sample(batch)
    for key in ("audio_features", "audio_masks", "audio_index"):
        del batch[key]
    return batch


def _per_sample(batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    index = batch["audio_index"]
    feats, masks = batch["audio_features"], batch["audio_masks"]
    return torch.cat([feats[i] for i in index]), torch.cat([masks[i] for i in index])


def shared(t: torch.Tensor) -> torch.Tensor:
    """``t``, in a DataLoader worker moved to shared memory (once: every batch that sends it passes a handle)."""
    return t.share_memory_() if get_worker_info() is not None else t


def padded_fraction(attention_mask: torch.Tensor) -> float:
    """Share of padding tokens in a batch."""
    return 1.0 - float(attention_mask.float().mean())
