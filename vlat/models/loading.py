"""Loading a model of a supported family (hub id or local directory; :mod:`vlat.models`) and its processor."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import torch

from vlat.errors import ConfigError
from vlat.models import family_of_checkpoint

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(name: str) -> bool:
    """``owner/name`` that is not a local path: ``data/synth`` with a local ``data/`` is a path (a typo in it must not
    send the run into minutes of hub retries)."""
    return bool(_HUB_ID.match(name)) and not Path(name).exists() and not Path(name.split("/", 1)[0]).is_dir()


def check_model_source(name_or_path: str, field: str = "model_name_or_path") -> None:
    """A local model directory must exist and hold a ``config.json``; a hub id is left to the hub (one-line errors,
    before anything loads)."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise ConfigError(f"{field} {name_or_path}: not a model directory (no config.json)")
        # an unsupported model_type, or a family whose processor library is missing: one line, before anything loads
        family_of_checkpoint(name_or_path, field).check_installed(f"{field} {name_or_path}")
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

    family_of_checkpoint(name_or_path).check_installed(name_or_path)
    return AutoProcessor.from_pretrained(name_or_path)
