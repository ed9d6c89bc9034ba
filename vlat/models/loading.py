"""Loading a model of a supported family (hub id or local directory; :mod:`vlat.models`) and wrapping its language
model with LoRA."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

import torch

from vlat.errors import ConfigError
from vlat.models import family_of_checkpoint

LoraTargets = Literal["q", "qkvo"]
LORA_TARGET_REGEX = {
    # the audio tower's attention also has q_proj/k_proj/v_proj: restrict to the language model
    "q": r".*language_model.*\.q_proj",
    "qkvo": r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)",
}


def check_model_source(name_or_path: str, field: str = "model_name_or_path") -> None:
    """A local model directory must exist and hold a ``config.json``; a hub id is left to the hub (one-line errors,
    before anything loads)."""
    from vlat.data.sources import is_hub_id

    p = Path(name_or_path).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise ConfigError(f"{field} {name_or_path}: not a model directory (no config.json)")
        family_of_checkpoint(name_or_path, field)  # an unsupported model_type: one line, before anything loads
    elif not is_hub_id(name_or_path):
        raise ConfigError(f"{field} {name_or_path}: no such directory (and not a hub id)")


def text_head_dim(name_or_path: str) -> int:
    """The language model's attention head size, from the model's config alone (no weights)."""
    from transformers import AutoConfig

    text = AutoConfig.from_pretrained(name_or_path).text_config
    return getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads


def resolve_dtype(dtype: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    try:
        return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
    except KeyError:
        raise ConfigError(f"dtype: {dtype!r} is not one of auto, bfloat16, float16, float32") from None


def resolve_attn(attn_implementation: str) -> str:
    if attn_implementation == "auto":
        flash = importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available()
        return "flash_attention_2" if flash else "sdpa"
    if attn_implementation not in ("eager", "sdpa", "flash_attention_2"):
        raise ConfigError(f"attn_implementation: {attn_implementation!r} is not auto, eager, sdpa or flash_attention_2")
    return attn_implementation


def load_model(name_or_path: str, dtype: str = "auto", attn_implementation: str = "auto"):
    cls = family_of_checkpoint(name_or_path).load_class()
    return cls.from_pretrained(
        name_or_path, dtype=resolve_dtype(dtype), attn_implementation=resolve_attn(attn_implementation)
    )


def load_processor(name_or_path: str):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(name_or_path)


def add_lora(model, targets: LoraTargets = "qkvo", rank: int = 8, alpha: int = 16, dropout: float = 0.05):
    """PEFT LoRA on the language model's attention projections only; every other weight frozen."""
    from peft import LoraConfig, get_peft_model

    if targets not in LORA_TARGET_REGEX:
        raise ValueError(f"lora_targets: {targets!r} is not one of {', '.join(LORA_TARGET_REGEX)}")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGET_REGEX[targets])
    return get_peft_model(model, config)


def set_lora_input_casting(model, enabled: bool) -> int:
    """PEFT copies every LoRA layer's input to the adapter's dtype (fp32 adapters under bf16 weights), and autocast
    copies it back to bf16 for the matmul: two copies of every q/k/v/o input per layer. Under mixed precision every
    forward (and checkpoint recomputation) runs in autocast, so ``enabled=False`` lets LoRA take the activations as
    they are; the fp32 master weights and optimizer state stay. Returns the number of LoRA layers set."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    for m in layers:
        m.cast_input_dtype_enabled = enabled
    return len(layers)


def prepare_for_training(
    model,
    lora_targets: LoraTargets = "qkvo",
    lora_rank: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.05,
    gradient_checkpointing: bool | str = "off",
):
    """Freeze ``model``, add LoRA to its language model (dropout fused into ``lora_A``) and set up activation
    checkpointing by policy (:mod:`vlat.training.activation_checkpointing`: ``full`` / ``selective`` set here, ``auto`` per
    batch by the caller).

    What ``VLATModule`` trains (and ``bench/train_step.py`` measures). Returns the PEFT-wrapped model.
    """
    from vlat.training.activation_checkpointing import (
        layer_mask,
        layers_to_checkpoint,
        policy_of,
        set_checkpointed_layers,
    )
    from vlat.training.lora_dropout import fuse_lora_dropout

    policy = policy_of(gradient_checkpointing)
    model.requires_grad_(False)
    model = add_lora(model, lora_targets, lora_rank, lora_alpha, lora_dropout)
    fuse_lora_dropout(model)  # no stored masks or dropped copies of the activations (vlat.training.lora_dropout)
    if policy != "off":
        # transformers hooks every input-embedding layer to require grad, the audio tower's conv1 included,
        # which makes the frozen encoder build a full autograd graph. Non-reentrant checkpointing needs no
        # input gradients: drop those hooks so the tower and projector run graph-free (as under no_grad).
        base = model.base_model.model
        base.config.use_cache = False
        base.activation_checkpointing_enable({"use_reentrant": False})
        base.disable_input_require_grads()
        layers = base.model.language_model.layers
        k = layers_to_checkpoint(policy, len(layers), 0, 0, 0, None)  # auto: none until a batch is planned
        set_checkpointed_layers(layers, layer_mask(k, len(layers)))
    return model
