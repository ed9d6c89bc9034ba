"""The full-size Qwen2-Audio-7B architecture with random weights, for benchmarks and offline runs (no download).

Speed and memory do not depend on weight values, so a model built from the published configuration
(``Qwen/Qwen2-Audio-7B-Instruct``'s ``config.json``; see ``shared/reference/NOTES.md``) and initialised
randomly, directly on the GPU in bf16, costs what the real checkpoint costs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch


def qwen2_audio_7b_config(num_layers: int | None = None, audio_layers: int | None = None):
    """``Qwen2AudioConfig`` of Qwen2-Audio-7B(-Instruct); ``num_layers``/``audio_layers`` shrink it for checks."""
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


def build_random_model(
    config,
    device: str | torch.device = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    attn_implementation: str = "sdpa",
    seed: int = 0,
):
    """``Qwen2AudioForConditionalGeneration`` of ``config`` with random weights allocated on ``device``."""
    from transformers import Qwen2AudioForConditionalGeneration

    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2AudioForConditionalGeneration._from_config(
            config, dtype=dtype, attn_implementation=attn_implementation
        )
    return model


def write_full_model(
    out_dir: str | os.PathLike,
    num_layers: int | None = None,
    audio_layers: int | None = None,
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
) -> Path:
    """Write a random-weight checkpoint of the published architecture (``num_layers``/``audio_layers`` shrink its
    depth, never its widths) with a tokenizer and processor laid out like the real one: the special tokens at their
    real ids (``<|AUDIO|>`` 151646, ``<|im_end|>`` 151645, ``<|endoftext|>`` 151643), the 128-bin Whisper features,
    the chat template. ``train.py`` and ``evaluate.py`` load it as they load ``Qwen/Qwen2-Audio-7B-Instruct``, so the
    whole pipeline runs offline at full size. Written beside ``out_dir`` and renamed into place."""
    from vlat.io import make_staging_dir, publish_dir
    from vlat.testing.tiny_model import REAL_SPECIAL_IDS, build_processor, build_tokenizer

    out = Path(out_dir)
    tokenizer = build_tokenizer(REAL_SPECIAL_IDS)
    config = qwen2_audio_7b_config(num_layers, audio_layers)
    model = build_random_model(config, device="cpu", dtype=dtype, attn_implementation="sdpa", seed=seed)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    tmp = make_staging_dir(out)
    try:
        model.save_pretrained(tmp, max_shard_size="4GB")
        build_processor(tokenizer).save_pretrained(tmp)
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
