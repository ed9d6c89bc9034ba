"""Logits only where they are read: the LM head applied to selected positions.

``Qwen2AudioForConditionalGeneration.forward`` applies the LM head at every position: T × 156,032 logits, 4.7 GB in
bf16 for 10 minutes of audio (15,000 tokens) and several times that inside its loss and backward, plus 2·T·h·V FLOPs
each way. MCQA training reads a few answer tokens and scoring reads one position per question. These helpers run the
inner ``Qwen2AudioModel`` (audio tower, projector, language model, LoRA layers and the audio RoPE hooks included) and
apply the LM head only where needed; the results equal the stock forward's (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlat.data.collate import model_inputs
from vlat.data.prompts import IGNORE_INDEX
from vlat.models import find_audio_model, forward_kwargs


def backbone(model, **inputs):
    """The family's inner model's output (``last_hidden_state`` and the KV cache): no LM head."""
    return find_audio_model(model)(**forward_kwargs(model, inputs))


def answer_loss(model, batch: dict) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled, unpadded positions (the stock loss), computed in fp32."""
    inputs = {k: v for k, v in model_inputs(batch).items() if k != "labels"}
    hidden = backbone(model, **inputs, use_cache=False).last_hidden_state
    target = batch["labels"][:, 1:]
    keep = (target != IGNORE_INDEX) & (batch["attention_mask"][:, 1:] != 0)
    logits = model.get_output_embeddings()(hidden[:, :-1][keep])  # (labelled positions, V)
    return F.cross_entropy(logits.float(), target[keep])


def logits_at(model, hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """LM-head logits of row ``i`` at ``positions[i]``: (B, V)."""
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return model.get_output_embeddings()(hidden[rows, positions.to(hidden.device)])
