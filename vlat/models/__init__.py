"""Model families: everything specific to one audio-language model (see :class:`ModelFamily`), one module each.

>>> family_of_checkpoint("Qwen/Qwen2-Audio-7B-Instruct").name   # doctest: +SKIP
'Qwen2-Audio'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from vlat.errors import ConfigError
from vlat.models.audioflamingo3 import AUDIO_FLAMINGO_3
from vlat.models.family import ModelFamily
from vlat.models.qwen2_audio import QWEN2_AUDIO
from vlat.models.voxtral import VOXTRAL

FAMILIES: dict[str, ModelFamily] = {f.model_type: f for f in (QWEN2_AUDIO, AUDIO_FLAMINGO_3, VOXTRAL)}


def supported() -> str:
    return ", ".join(f"{f.name} ({t})" for t, f in FAMILIES.items())


def family_of_type(model_type: str | None, where: str) -> ModelFamily:
    """The family of ``model_type``; otherwise a one-line :class:`ConfigError` naming ``where`` and the supported ones."""
    if model_type not in FAMILIES:
        raise ConfigError(f"{where}: model_type {model_type!r} is not a supported family (supported: {supported()})")
    return FAMILIES[model_type]


def family_of_checkpoint(name_or_path: str, field: str = "model_name_or_path") -> ModelFamily:
    """The family of a checkpoint, from its ``config.json`` alone (a local directory is read directly; a hub id
    through ``AutoConfig``, which fetches only the config)."""
    local = Path(name_or_path).expanduser() / "config.json"
    if local.is_file():
        try:
            model_type = json.loads(local.read_text()).get("model_type")
        except (OSError, ValueError, AttributeError) as e:
            raise ConfigError(f"{field} {name_or_path}: config.json is not readable JSON ({e})") from None
    else:
        from transformers import AutoConfig

        model_type = AutoConfig.from_pretrained(name_or_path).model_type
    return family_of_type(model_type, f"{field} {name_or_path}")


def family_of_model(model: nn.Module) -> ModelFamily:
    """The family of a loaded model (a stock generation model, its inner model, or a PEFT wrapper of either)."""
    return _find(model)[0]


def family_of_processor(processor) -> ModelFamily:
    """The family whose checkpoints load ``processor`` (its class: e.g. ``VoxtralProcessor``)."""
    name = type(processor).__name__
    for family in FAMILIES.values():
        if family.processor_class == name:
            return family
    raise TypeError(f"processor: {name} is not the processor of a supported family ({supported()})")


def forward_kwargs(model: nn.Module, inputs: dict[str, Any]) -> dict[str, Any]:
    """``inputs`` (vlat's batch keys) as the forward of ``model``'s family takes them (:meth:`ModelFamily.forward_kwargs`)."""
    family, inner = _find(model)
    return family.forward_kwargs(inner, inputs)


def find_audio_model(model: nn.Module) -> nn.Module:
    """The family's inner model inside ``model`` (e.g. the ``Qwen2AudioModel`` of a
    ``Qwen2AudioForConditionalGeneration`` or of a PEFT wrapper): the seam the audio RoPE hooks."""
    return _find(model)[1]


def _find(model: nn.Module) -> tuple[ModelFamily, nn.Module]:
    types = {f: f.inner_type() for f in FAMILIES.values()}
    for module in model.modules():
        for family, cls in types.items():
            if isinstance(module, cls):
                return family, module
    raise TypeError(f"model: {type(model).__name__} is not a model of a supported family ({supported()})")


__all__ = [
    "AUDIO_FLAMINGO_3",
    "QWEN2_AUDIO",
    "VOXTRAL",
    "FAMILIES",
    "ModelFamily",
    "family_of_checkpoint",
    "family_of_model",
    "family_of_processor",
    "family_of_type",
    "find_audio_model",
    "forward_kwargs",
]
