"""Qwen2-Audio (the paper's model): Whisper-style encoder, 25 audio tokens/s (750 per 30-s window), Qwen2 decoder;
trained on audio of at most 30 s."""

from __future__ import annotations

import torch

from vlat.models.family import ModelFamily


class Qwen2AudioFamily(ModelFamily):
    def run_tower(self, inner, features: torch.Tensor, feature_mask: torch.Tensor) -> torch.Tensor:
        # the stock forward builds the encoder's bidirectional mask from the frames after its first (stride-2) conv
        from transformers.masking_utils import create_bidirectional_mask

        tower = inner.audio_tower
        conv_len = (feature_mask.sum(-1) - 1) // 2 + 1
        frames = features.shape[-1] // 2
        mask2d = (torch.arange(frames, device=features.device)[None] < conv_len[:, None]).long()
        attn = create_bidirectional_mask(
            config=tower.config,
            inputs_embeds=torch.zeros(len(features), frames, 1, dtype=features.dtype, device=features.device),
            attention_mask=mask2d,
        )
        return tower(features, attention_mask=attn).last_hidden_state


QWEN2_AUDIO = Qwen2AudioFamily(
    name="Qwen2-Audio",
    model_type="qwen2_audio",
    model_class="Qwen2AudioForConditionalGeneration",
    inner_class="Qwen2AudioModel",
    feature_mask_key="feature_attention_mask",
    native_seconds=30.0,
)
