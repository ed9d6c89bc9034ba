"""Audio Flamingo 3 (NVIDIA, arXiv 2507.08128): Whisper-style encoder with 2x average pooling, 25 audio tokens/s (750
per 30-s window, the windows' tokens concatenated into one ``<sound>`` run), Qwen2 decoder; trained on audio up to
10 minutes (its processor truncates at ``max_audio_len`` = 600 s; vlat windows the audio itself, so nothing is
truncated)."""

from __future__ import annotations

import torch

from vlat.models.family import ModelFamily


class AudioFlamingo3Family(ModelFamily):
    def run_tower(self, inner, features: torch.Tensor, feature_mask: torch.Tensor) -> torch.Tensor:
        return inner.audio_tower(features, input_features_mask=feature_mask).last_hidden_state


AUDIO_FLAMINGO_3 = AudioFlamingo3Family(
    name="Audio Flamingo 3",
    model_type="audioflamingo3",
    model_class="AudioFlamingo3ForConditionalGeneration",
    inner_class="AudioFlamingo3Model",
    feature_mask_key="input_features_mask",
    native_seconds=600.0,
)
