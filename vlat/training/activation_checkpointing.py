"""Activation checkpointing as a policy: which decoder layers recompute in backward, decided per batch.

- ``off``: none; ``full``: every layer; ``selective``: every other layer;
- ``auto``: the fewest layers that make the batch's kept activations fit the activation budget (the device's
  available memory when training starts, or ``activation_memory_gib``), spread evenly over the depth. A batch that
  fits recomputes nothing, so short batches are not slowed for the sake of long ones.

Activation model, per token and decoder layer, in bytes of the activation dtype ``b`` (hidden ``h``, MLP ``I``):
without checkpointing a Qwen2 layer with LoRA on q/k/v/o keeps at most about ``(22 h + 4 I) b`` for backward (both
norms' inputs in fp32, the q/k/v/o and LoRA inputs with PEFT's dropout copies and masks, which the fused LoRA
dropout no longer keeps, rotary q/k, attention output, SwiGLU gate / up / product);
a checkpointed layer keeps its input, ``h b``, and recomputes one layer at a time in backward. The model errs high:
on the H100, checkpointing on vs off differed by 18.9 GiB for 3,160 tokens x 32 layers at 2 minutes, about 200 kB
per token-layer (``bench/results/h100-2026-11-23``, fp32 LoRA inputs then); the model says 268 kB for the 7B widths
in bf16.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

CheckpointPolicy = Literal["auto", "full", "selective", "off"]
POLICIES: tuple[str, ...] = ("auto", "full", "selective", "off")


def policy_of(setting: bool | str) -> str:
    """``gradient_checkpointing`` as a policy name (``true`` / ``false`` of older configs = ``full`` / ``off``)."""
    if isinstance(setting, bool):
        return "full" if setting else "off"
    if setting not in POLICIES:
        raise ValueError(f"gradient_checkpointing: {setting!r} is not one of {', '.join(POLICIES)} (or true/false)")
    return setting


def kept_bytes_per_token(text_config, dtype_bytes: int) -> tuple[int, int]:
    """(without, with checkpointing): bytes one decoder layer keeps for backward per token."""
    h, inter = text_config.hidden_size, text_config.intermediate_size
    return (22 * h + 4 * inter) * dtype_bytes, h * dtype_bytes


def activation_bytes(n_layers: int, checkpointed: int, tokens: int, off: int, on: int) -> int:
    """Kept activations of a batch of ``tokens`` tokens with ``checkpointed`` of ``n_layers`` layers recomputed
    (plus one layer's recomputation in backward when any is)."""
    return tokens * ((n_layers - checkpointed) * off + checkpointed * on + (off if checkpointed else 0))


def layers_to_checkpoint(policy: str, n_layers: int, tokens: int, off: int, on: int, budget: float | None) -> int:
    """How many layers recompute for a batch of ``tokens`` tokens under ``policy`` (``budget`` in bytes; ``auto``)."""
    if policy == "off":
        return 0
    if policy == "full":
        return n_layers
    if policy == "selective":
        return n_layers // 2
    if budget is None or activation_bytes(n_layers, 0, tokens, off, on) <= budget:
        return 0
    # fewest k with tokens * ((n - k) off + k on + off) <= budget
    k = math.ceil((tokens * (n_layers + 1) * off - budget) / (tokens * (off - on)))
    return max(1, min(n_layers, k))


def layer_mask(k: int, n_layers: int) -> list[bool]:
    """``k`` of ``n_layers`` layers, spread evenly (layer i when the running share ``(i + 1) k / n`` steps up)."""
    return [(i + 1) * k // n_layers > i * k // n_layers for i in range(n_layers)]


def set_checkpointed_layers(layers: torch.nn.ModuleList, mask: list[bool]) -> None:
    """Turn checkpointing on or off per decoder layer (Hugging Face's ``GradientCheckpointingLayer`` flag)."""
    for layer, on in zip(layers, mask, strict=True):
        layer.gradient_checkpointing = on
