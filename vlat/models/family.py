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

# Where the MCQA / free-form prompt puts the user's question inside a rendered chat (split out again by chat_parts).
_QUESTION_SLOT = "\x00QUESTION\x00"


@dataclass(frozen=True)
class ModelFamily:
    """One family of checkpoints, loaded through its stock ``transformers`` classes.

    Attributes:
        name: how users and errors name it.
        model_type: the ``model_type`` of its ``config.json``.
        model_class: the ``transformers`` class ``from_pretrained`` loads (its generation model).
        inner_class: the module whose forward still sees ``input_ids`` and holds ``language_model`` (a RoPE
            decoder with ``rotary_emb``): the one seam the audio RoPE hooks (:mod:`vlat.rope.patch`).
        processor_class: the ``transformers`` processor class its checkpoints load with.
        feature_mask_key: the forward's name for the per-window mel-frame mask (vlat's batches call it
            ``feature_attention_mask``, Qwen2-Audio's name, and :meth:`forward_kwargs` renames it); None: the forward
            takes no mask (every window is whole).
        native_seconds: the longest audio the published checkpoint was trained on: ``ask.py`` extends beyond it.
        published_id: the published checkpoint's hub id (its widths: :meth:`published_config`).
        end_of_turn: the token that ends an assistant turn (the last target token of an answer).
        whole_recording_features: the processor computes log-mel features over the whole recording in one call
            (one normalisation, padded to whole windows) instead of window by window.
        requires: (module, pip extra) its processor needs beyond vlat's own dependencies.
        system_turn: its chat renders a system prompt next to audio.
    """

    name: str
    model_type: str
    model_class: str
    inner_class: str
    processor_class: str
    feature_mask_key: str | None
    native_seconds: float
    published_id: str
    end_of_turn: str = "<|im_end|>"
    whole_recording_features: bool = False
    requires: tuple[str, str] | None = None
    system_turn: bool = True

    def check_installed(self, where: str) -> None:
        """A one-line :class:`~vlat.errors.ConfigError` naming the extra to install when the processor's library is
        missing (before anything loads)."""
        import importlib.util

        from vlat.errors import ConfigError

        if self.requires and importlib.util.find_spec(self.requires[0]) is None:
            module, extra = self.requires
            raise ConfigError(f"{where}: {self.name} needs {module.replace('_', '-')}: pip install 'vlat[{extra}]'")

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
            mask = out.pop("feature_attention_mask")
            if self.feature_mask_key is not None:
                out[self.feature_mask_key] = mask
        feats = out.get("input_features")
        if feats is not None:
            out["input_features"] = feats.to(inner.audio_tower.conv1.weight.dtype)
        return out

    def feature_mask(self, kwargs: dict[str, Any]) -> torch.Tensor:
        """The mel-frame mask of a forward call's ``kwargs`` (as :meth:`forward_kwargs` named it); all frames when
        the family takes no mask."""
        if self.feature_mask_key is None:
            feats = kwargs["input_features"]
            return torch.ones(feats.shape[0], feats.shape[-1], dtype=torch.long, device=feats.device)
        return kwargs[self.feature_mask_key]

    def tokens_for_frames(self, frames: torch.Tensor | int) -> torch.Tensor:
        """Audio tokens a window of ``frames`` mel frames becomes (before compression). Whisper-style encoders with a
        2x pooling (Qwen2-Audio, Audio Flamingo 3): the model's own length formula, 3000 frames -> 750 tokens."""
        from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioEncoder

        return Qwen2AudioEncoder._get_feat_extract_output_lengths(None, torch.as_tensor(frames))[1]

    def tokens_per_second(self, feature_extractor) -> float:
        """Audio tokens per second of audio (25 on Qwen2-Audio: 750 per 30-s window)."""
        return float(self.tokens_for_frames(feature_extractor.nb_max_frames)) / feature_extractor.chunk_length

    def user_text_ids(self, tokenizer, text: str) -> list[int]:
        """Ids of text the user typed: a typed ``<|im_end|>`` is text, not the end of the turn."""
        return tokenizer(text, add_special_tokens=False, split_special_tokens=True).input_ids

    def chat_parts(
        self, processor, n_audio: int, before_question: str, system_prompt: str
    ) -> tuple[list[int], list[int]]:
        """The chat around one recording and one user text, as the processor's chat template renders it: the ids up to
        the question (chat header, the ``n_audio`` audio tokens, ``before_question``) and the ids after it (the end of
        the user turn and the assistant header)."""
        tok = processor.tokenizer
        messages = [
            {"role": "system", "content": system_prompt},
            {
                "role": "user",
                "content": [
                    {"type": "audio", "audio": "audio"},
                    {"type": "text", "text": before_question + _QUESTION_SLOT},
                ],
            },
        ]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        before, sep, after = text.partition(processor.audio_token)
        if not sep or processor.audio_token in after or after.count(_QUESTION_SLOT) != 1:
            raise ValueError("chat template must render exactly one audio placeholder and one user text per recording")
        head, tail = after.split(_QUESTION_SLOT)
        audio_id = tok.convert_tokens_to_ids(processor.audio_token)
        prefix = [
            *tok(before, add_special_tokens=False).input_ids,
            *([audio_id] * n_audio),
            *tok(head, add_special_tokens=False).input_ids,
        ]
        return prefix, tok(tail, add_special_tokens=False).input_ids

    def run_tower(self, inner, features: torch.Tensor, feature_mask: torch.Tensor) -> torch.Tensor:
        """The audio encoder's output for ``features`` (W, mel, frames): (W, tokens per window, d), before the
        projector; positions past a window's true length are padding."""
        raise NotImplementedError

    def published_config(self, num_layers: int | None = None, audio_layers: int | None = None):
        """The published checkpoint's configuration (its widths and special ids), for random full-size models
        (:mod:`vlat.testing.full_size`); ``num_layers`` / ``audio_layers`` shrink its depth, never its widths."""
        raise NotImplementedError
