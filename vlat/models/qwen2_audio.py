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

    def published_config(self, num_layers: int | None = None, audio_layers: int | None = None):
        # Qwen/Qwen2-Audio-7B-Instruct's config.json (shared/reference/NOTES.md)
        from transformers import Qwen2AudioConfig, Qwen2AudioEncoderConfig, Qwen2Config

        text = Qwen2Config(
            vocab_size=156032,
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=num_layers or 32,
            num_attention_heads=32,
            num_key_value_heads=32,
            max_position_embeddings=8192,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
            bos_token_id=151643,
            eos_token_id=151645,
            pad_token_id=151643,
        )
        audio = Qwen2AudioEncoderConfig(
            num_mel_bins=128,
            encoder_layers=audio_layers or 32,
            encoder_attention_heads=20,
            encoder_ffn_dim=5120,
            d_model=1280,
            max_source_positions=1500,
        )
        return Qwen2AudioConfig(audio_config=audio, text_config=text, audio_token_index=151646)


QWEN2_AUDIO = Qwen2AudioFamily(
    name="Qwen2-Audio",
    model_type="qwen2_audio",
    model_class="Qwen2AudioForConditionalGeneration",
    inner_class="Qwen2AudioModel",
    processor_class="Qwen2AudioProcessor",
    feature_mask_key="feature_attention_mask",
    native_seconds=30.0,
    published_id="Qwen/Qwen2-Audio-7B-Instruct",
)
