"""Batching of MCQA examples: pad token sequences, stack every 30-s window of every sample.

Right padding for training (labels line up), left padding for generation and last-token scoring. Windows of all
samples are concatenated in order: Qwen2-Audio runs them through its encoder as one batch and scatters the resulting
audio tokens into the ``<|AUDIO|>`` runs in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.utils.data import get_worker_info

from vlat.prompts import IGNORE_INDEX

MODEL_KEYS = ("input_ids", "attention_mask", "input_features", "feature_attention_mask", "labels")


def model_inputs(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The keys of ``batch`` that the model's forward takes."""
    return {k: batch[k] for k in MODEL_KEYS if k in batch}


@dataclass
class MCQACollator:
    pad_token_id: int
    padding_side: Literal["left", "right"] = "right"

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
        batch["input_features"] = _cat([e["input_features"] for e in examples])
        batch["feature_attention_mask"] = _cat([e["feature_attention_mask"] for e in examples])
        for key in examples[0]:  # metadata (ids, buckets, answers, ...) rides along as lists
            if key not in batch and key not in MODEL_KEYS:
                batch[key] = [e.get(key) for e in examples]
        return batch


def _cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.cat``; in a DataLoader worker straight into shared memory, so sending the batch to the training
    process copies nothing more (as torch's ``default_collate`` does)."""
    if get_worker_info() is None:
        return torch.cat(tensors)
    shape = (sum(t.shape[0] for t in tensors), *tensors[0].shape[1:])
    out = torch.empty(0, dtype=tensors[0].dtype)
    out.set_(out.untyped_storage()._new_shared(out.element_size() * torch.Size(shape).numel()), 0, shape)
    return torch.cat(tensors, out=out)


def padded_fraction(attention_mask: torch.Tensor) -> float:
    """Share of padding tokens in a batch."""
    return 1.0 - float(attention_mask.float().mean())
