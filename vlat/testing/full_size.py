"""The full-size architecture of each model family with random weights, for benchmarks and offline runs (no download).

Speed and memory do not depend on weight values, so a model built from the published configuration (the family's
:meth:`~vlat.models.ModelFamily.published_config`, e.g. ``Qwen/Qwen2-Audio-7B-Instruct``'s ``config.json``; see
``shared/reference/NOTES.md``) and initialised randomly, directly on the GPU in bf16, costs what the real checkpoint
costs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch


def qwen2_audio_7b_config(num_layers: int | None = None, audio_layers: int | None = None):
    """``Qwen2AudioConfig`` of Qwen2-Audio-7B(-Instruct); ``num_layers``/``audio_layers`` shrink it for checks."""
    from vlat.models import QWEN2_AUDIO

    return QWEN2_AUDIO.published_config(num_layers, audio_layers)


def build_random_model(
    config,
    device: str | torch.device = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    attn_implementation: str = "sdpa",
    seed: int = 0,
):
    """The generation model of ``config``'s family (e.g. ``Qwen2AudioForConditionalGeneration``) with random weights
    allocated on ``device``."""
    from vlat.models import family_of_type

    cls = family_of_type(config.model_type, "config").load_class()
    torch.manual_seed(seed)
    with torch.device(device):
        model = cls._from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    return model


def write_full_model(
    out_dir: str | os.PathLike,
    num_layers: int | None = None,
    audio_layers: int | None = None,
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
    family: str = "qwen2_audio",
) -> Path:
    """Write a random-weight checkpoint of ``family``'s published architecture (``num_layers``/``audio_layers``
    shrink its depth, never its widths) with a tokenizer and processor laid out like the real one: the special
    tokens at their real ids (Qwen2-Audio: ``<|AUDIO|>`` 151646; Audio Flamingo 3: ``<sound>`` 151669; both
    ``<|im_end|>`` 151645, ``<|endoftext|>`` 151643), the 128-bin Whisper features, the chat template. ``train.py``
    and ``evaluate.py`` load it as they load the published checkpoint, so the whole pipeline runs offline at full
    size. Written beside ``out_dir`` and renamed into place."""
    from vlat.io import make_staging_dir, publish_dir
    from vlat.models import FAMILIES
    from vlat.testing.tiny_model import family_tokenizer_and_processor

    out = Path(out_dir)
    if family not in FAMILIES:
        raise ValueError(f"family: {family!r} is not one of {', '.join(FAMILIES)}")
    tokenizer, processor = family_tokenizer_and_processor(family, real_ids=True)
    config = FAMILIES[family].published_config(num_layers, audio_layers)
    model = build_random_model(config, device="cpu", dtype=dtype, attn_implementation="sdpa", seed=seed)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    tmp = make_staging_dir(out)
    try:
        model.save_pretrained(tmp, max_shard_size="4GB")
        processor.save_pretrained(tmp)
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
