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

    def published_config(self, num_layers: int | None = None, audio_layers: int | None = None):
        # nvidia/audio-flamingo-3-hf: a Qwen2.5-7B decoder (transformers' convert_audioflamingo3_to_hf.py) and the
        # Whisper-large-v3 encoder (AudioFlamingo3EncoderConfig's defaults)
        from transformers import AudioFlamingo3Config, AudioFlamingo3EncoderConfig, Qwen2Config

        text = Qwen2Config(
            vocab_size=151672,
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=num_layers or 28,
            num_attention_heads=28,
            num_key_value_heads=4,
            max_position_embeddings=32768,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            rms_norm_eps=1e-6,
            tie_word_embeddings=False,
            bos_token_id=151643,
            eos_token_id=151645,
            pad_token_id=151643,
        )
        audio = AudioFlamingo3EncoderConfig(
            num_mel_bins=128,
            num_hidden_layers=audio_layers or 32,
            num_attention_heads=20,
            intermediate_size=5120,
            hidden_size=1280,
            max_source_positions=1500,
        )
        return AudioFlamingo3Config(audio_config=audio, text_config=text, audio_token_id=151669)


AUDIO_FLAMINGO_3 = AudioFlamingo3Family(
    name="Audio Flamingo 3",
    model_type="audioflamingo3",
    model_class="AudioFlamingo3ForConditionalGeneration",
    inner_class="AudioFlamingo3Model",
    processor_class="AudioFlamingo3Processor",
    feature_mask_key="input_features_mask",
    native_seconds=600.0,
    published_id="nvidia/audio-flamingo-3-hf",
)
