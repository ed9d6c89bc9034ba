"""What one audio-language model family must provide (arXiv 2510.15231, §4: the audio-only RoPE extension applies to
any model that feeds a RoPE language model one contiguous run of audio tokens with 1-D positions).

Everything else in vlat (RoPE math, VLAT, data, evaluation, compression) is model-agnostic and reads what it needs
from a :class:`ModelFamily`. A family is chosen by the checkpoint's ``config.json`` ``model_type``
(:func:`vlat.models.family_of_checkpoint`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class ModelFamily:
    """One family of checkpoints, loaded through its stock ``transformers`` classes.

    Attributes:
        name: how users and errors name it.
        model_type: the ``model_type`` of its ``config.json``.
        model_class: the ``transformers`` class ``from_pretrained`` loads (its generation model).
        inner_class: the module whose forward still sees ``input_ids`` and holds ``language_model`` (a RoPE
            decoder with ``rotary_emb``): the one seam the audio RoPE hooks (:mod:`vlat.rope.patch`).
        feature_mask_key: the forward's name for the per-window mel-frame mask (vlat's batches call it
            ``feature_attention_mask``, Qwen2-Audio's name, and :meth:`forward_kwargs` renames it).
        native_seconds: the longest audio the published checkpoint was trained on: ``ask.py`` extends beyond it.
        published_id: the published checkpoint's hub id (its widths: :meth:`published_config`).
    """

    name: str
    model_type: str
    model_class: str
    inner_class: str
    feature_mask_key: str
    native_seconds: float
    published_id: str

    def load_class(self):
        import transformers

        return getattr(transformers, self.model_class)

    def inner_type(self) -> type:
        import transformers

        return getattr(transformers, self.inner_class)

    def forward_kwargs(self, inner, inputs: dict[str, Any]) -> dict[str, Any]:
        """``inputs`` as this family's forward takes them: vlat's ``feature_attention_mask`` under the family's name,
        ``input_features`` in the audio tower's dtype (``inner``: the family's inner model)."""
        out = dict(inputs)
        if "feature_attention_mask" in out:
            out[self.feature_mask_key] = out.pop("feature_attention_mask")
        feats = out.get("input_features")
        if feats is not None:
            out["input_features"] = feats.to(inner.audio_tower.conv1.weight.dtype)
        return out

    def feature_mask(self, kwargs: dict[str, Any]) -> torch.Tensor:
        """The mel-frame mask of a forward call's ``kwargs`` (as :meth:`forward_kwargs` named it)."""
        return kwargs[self.feature_mask_key]

    def run_tower(self, inner, features: torch.Tensor, feature_mask: torch.Tensor) -> torch.Tensor:
        """The audio encoder's output for ``features`` (W, mel, frames): (W, tokens per window, d), before the
        projector; positions past a window's true length are padding."""
        raise NotImplementedError

    def published_config(self, num_layers: int | None = None, audio_layers: int | None = None):
        """The published checkpoint's configuration (its widths and special ids), for random full-size models
        (:mod:`vlat.testing.full_size`); ``num_layers`` / ``audio_layers`` shrink its depth, never its widths."""
        raise NotImplementedError
