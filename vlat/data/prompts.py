"""The MCQA prompt in the model family's chat format, with the whole recording as one contiguous audio span.

One recording -> one run of n audio tokens (n = tokens of all its 30-s windows; on Qwen2-Audio ``<|audio_bos|>`` +
n x ``<|AUDIO|>`` + ``<|audio_eos|>``), so the audio-only RoPE sees a single run; the family renders the chat around
it (:meth:`vlat.models.ModelFamily.chat_parts`). Options are numbered ``(1)``..``(4)`` and the expected answer is
``(N) option text`` (the paper's format, Figure 4); prompt tokens are masked out of the loss with -100.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vlat.audio.compression import AudioCompression
from vlat.audio.decode import AudioSource, featurize, load_audio
from vlat.errors import BadSampleError
from vlat.models import family_of_processor

N_OPTIONS = 4
SYSTEM_PROMPT = "You are a helpful assistant."
INSTRUCTION = (
    'Answer the multiple-choice question about the audio. Reply only in the format "(NUMBER) STATEMENT", '
    'for example "(4) A pen", with no other text. Use information from the whole audio.'
)
IGNORE_INDEX = -100


@dataclass(frozen=True)
class EncodedAudio:
    """A recording decoded and split into 30-s windows of features, shared by all its questions."""

    features: torch.Tensor  # (W, mel, frames)
    feature_mask: torch.Tensor  # (W, frames)
    window_tokens: torch.Tensor  # (W,) audio tokens of each window before compression (the family's count)

    def tokens(self, compression: AudioCompression | str | None = None) -> int:
        """Audio tokens the language model sees (per 30-s window, compressed: :mod:`vlat.audio.compression`)."""
        return int(AudioCompression.parse(compression).count(self.window_tokens).sum())


def encode_waveform(processor, wav: np.ndarray) -> EncodedAudio:
    """Featurise a waveform at the extractor's rate as ``processor``'s model family does (windows, token counts)."""
    family = family_of_processor(processor)
    feats, mask = featurize(wav, processor.feature_extractor, family.whole_recording_features)
    return EncodedAudio(feats, mask, family.tokens_for_frames(mask.sum(-1)))


def encode_recording(
    processor, audio: AudioSource | np.ndarray, *, max_audio_seconds: float | None = None, name: str = "sample"
) -> EncodedAudio:
    """Decode (any source :func:`vlat.audio.decode.load_audio` reads, or a waveform at the extractor's rate) and featurise."""
    fe = processor.feature_extractor
    src = (audio, fe.sampling_rate) if isinstance(audio, np.ndarray) else audio
    wav = load_audio(src, fe.sampling_rate, max_seconds=max_audio_seconds, name=name)
    return encode_waveform(processor, wav)


def end_of_turn_id(processor) -> int:
    """Id of the token that ends an assistant turn in ``processor``'s family (``<|im_end|>`` on the Qwen2 chats,
    ``</s>`` on Voxtral), named explicitly (``eos_token`` differs between Qwen2-Audio checkpoints)."""
    end = family_of_processor(processor).end_of_turn
    tok = processor.tokenizer
    tid = tok.convert_tokens_to_ids(end)
    if tid is None or tid == tok.unk_token_id:
        raise ValueError(f"tokenizer has no {end} token: not the chat tokenizer of its model family")
    return tid


def format_question(question: str, options: Sequence[str]) -> str:
    return question.strip() + "\n" + "\n".join(f"({i + 1}) {opt.strip()}" for i, opt in enumerate(options))


def format_answer(options: Sequence[str], answer: int) -> str:
    return f"({answer + 1}) {options[answer].strip()}"


def validate_mcqa(question, options, answer, name: str) -> None:
    if not isinstance(question, str) or not question.strip():
        raise BadSampleError(name, "bad_question", "question is missing or empty")
    if isinstance(options, str) or not isinstance(options, Sequence) or len(options) != N_OPTIONS:
        got = len(options) if isinstance(options, Sequence) and not isinstance(options, str) else type(options).__name__
        raise BadSampleError(name, "bad_options", f"expected {N_OPTIONS} options, got {got}")
    if any(not isinstance(o, str) or not o.strip() for o in options):
        raise BadSampleError(name, "bad_options", "every option must be a non-empty string")
    if answer is not None and (not isinstance(answer, int | np.integer) or not 0 <= int(answer) < N_OPTIONS):
        raise BadSampleError(name, "bad_answer", f"answer index {answer!r} is outside 0..{N_OPTIONS - 1}")


def mcqa_prompt_ids(
    processor,
    n_audio: int,
    question: str,
    options: Sequence[str],
    assistant_prefix: str = "",
    instruction: str = INSTRUCTION,
) -> tuple[list[int], list[int]]:
    """Token ids of the prompt, split into the recording's shared *prefix* (chat header, the n audio tokens and the
    instruction) and the question's *suffix* (question, options, assistant header, ``assistant_prefix``).

    Every question about one recording shares the prefix, so evaluation can encode it once and reuse its KV cache;
    :func:`build_mcqa_example` uses the same split, so both paths see identical tokens.
    """
    prefix, tail = family_of_processor(processor).chat_parts(processor, n_audio, f"{instruction}\n\n", SYSTEM_PROMPT)
    tok = processor.tokenizer
    asked = tok(format_question(question, options), add_special_tokens=False).input_ids
    return prefix, [
        *asked,
        *tail,
        *(tok(assistant_prefix, add_special_tokens=False).input_ids if assistant_prefix else []),
    ]


def chat_prompt_ids(
    processor, n_audio: int, question: str, system_prompt: str = SYSTEM_PROMPT
) -> tuple[list[int], list[int]]:
    """A free-form question about one recording: the shared *prefix* (chat header and the n audio tokens) and the
    question's *suffix* (the question and the assistant header), as the chat template renders them together."""
    family = family_of_processor(processor)
    prefix, tail = family.chat_parts(processor, n_audio, "", system_prompt)
    return prefix, family.user_text_ids(processor.tokenizer, question.strip()) + tail


def build_mcqa_example(
    processor,
    audio: AudioSource | np.ndarray | EncodedAudio,
    question: str,
    options: Sequence[str],
    answer: int | None = None,
    *,
    assistant_prefix: str = "",
    max_audio_seconds: float | None = None,
    instruction: str = INSTRUCTION,
    audio_compression: AudioCompression | str | None = None,
    name: str = "sample",
) -> dict[str, torch.Tensor]:
    """Tokens and features of one MCQA question about one recording (any length).

    Args:
        processor: the model's processor (tokenizer + Whisper feature extractor + chat format), of a supported family.
        audio: a 16-kHz float waveform, anything :func:`vlat.audio.decode.load_audio` reads, or an :class:`EncodedAudio`
            (one decode per recording, shared by its questions).
        answer: 0-based index of the correct option; when given, ``labels`` hold ``(N) option`` and the end of turn.
        audio_compression: the model's compression setting: the audio run holds that many tokens.
        assistant_prefix: text appended after the assistant header, outside the labels (``"("`` for logits scoring).
        name: how errors refer to this sample.

    Returns ``input_ids``, ``attention_mask`` (L,), ``input_features`` (W, 128, 3000), ``feature_attention_mask``
    (W, 3000) and, with ``answer``, ``labels`` (L,).
    """
    validate_mcqa(question, options, answer, name)
    tok = processor.tokenizer
    if not isinstance(audio, EncodedAudio):
        audio = encode_recording(processor, audio, max_audio_seconds=max_audio_seconds, name=name)
    features, feature_mask, n_audio = audio.features, audio.feature_mask, audio.tokens(audio_compression)

    prefix, suffix = mcqa_prompt_ids(processor, n_audio, question, options, assistant_prefix, instruction)
    prompt = prefix + suffix
    target = []
    if answer is not None:
        target = [
            *tok(format_answer(options, int(answer)), add_special_tokens=False).input_ids,
            end_of_turn_id(processor),
        ]
    input_ids = torch.tensor(prompt + target, dtype=torch.long)
    example = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "input_features": features,
        "feature_attention_mask": feature_mask,
    }
    if answer is not None:
        example["labels"] = torch.tensor([IGNORE_INDEX] * len(prompt) + target, dtype=torch.long)
    return example
