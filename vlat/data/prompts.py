"""The MCQA prompt in Qwen2-Audio's chat format, with the whole recording as one contiguous audio span.

One recording -> ``<|audio_bos|>`` + n x ``<|AUDIO|>`` + ``<|audio_eos|>`` (n = tokens of all its 30-s windows), so the
audio-only RoPE sees a single run. Options are numbered ``(1)``..``(4)`` and the expected answer is
``(N) option text`` (the paper's format, Figure 4); prompt tokens are masked out of the loss with -100.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vlat.audio.compression import AudioCompression
from vlat.audio.decode import AudioSource, audio_tokens_for_frames, featurize, load_audio
from vlat.errors import BadSampleError

N_OPTIONS = 4
SYSTEM_PROMPT = "You are a helpful assistant."
INSTRUCTION = (
    'Answer the multiple-choice question about the audio. Reply only in the format "(NUMBER) STATEMENT", '
    'for example "(4) A pen", with no other text. Use information from the whole audio.'
)
IGNORE_INDEX = -100
END_OF_TURN = "<|im_end|>"  # the chat template's end of an assistant turn: the last target token


@dataclass(frozen=True)
class EncodedAudio:
    """A recording decoded and split into 30-s windows of features, shared by all its questions."""

    features: torch.Tensor  # (W, mel, frames)
    feature_mask: torch.Tensor  # (W, frames)

    def tokens(self, compression: AudioCompression | str | None = None) -> int:
        """Audio tokens the language model sees (per 30-s window, compressed: :mod:`vlat.audio.compression`)."""
        per_window = audio_tokens_for_frames(self.feature_mask.sum(-1))
        return int(AudioCompression.parse(compression).count(per_window).sum())


def encode_recording(
    processor, audio: AudioSource | np.ndarray, *, max_audio_seconds: float | None = None, name: str = "sample"
) -> EncodedAudio:
    """Decode (any source :func:`vlat.audio.decode.load_audio` reads, or a waveform at the extractor's rate) and featurise."""
    fe = processor.feature_extractor
    src = (audio, fe.sampling_rate) if isinstance(audio, np.ndarray) else audio
    wav = load_audio(src, fe.sampling_rate, max_seconds=max_audio_seconds, name=name)
    return EncodedAudio(*featurize(wav, fe))


def end_of_turn_id(tokenizer) -> int:
    """Id of ``<|im_end|>``, named explicitly (``eos_token`` differs between Qwen2-Audio checkpoints)."""
    tid = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if tid is None or tid == tokenizer.unk_token_id:
        raise ValueError(f"tokenizer has no {END_OF_TURN} token: not a Qwen2-Audio chat tokenizer")
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


_QUESTION_SLOT = "\x00QUESTION\x00"


def _chat_parts(processor, n_audio: int, before_question: str, system_prompt: str) -> tuple[list[int], str]:
    """The chat template around one recording and one user text: the ids up to the question (chat header, the n audio
    tokens, ``before_question``) and the text after it (the end of the user turn and the assistant header)."""
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
    return prefix, tail


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
    prefix, tail = _chat_parts(processor, n_audio, f"{instruction}\n\n", SYSTEM_PROMPT)
    text = format_question(question, options) + tail + assistant_prefix
    return prefix, processor.tokenizer(text, add_special_tokens=False).input_ids


def chat_prompt_ids(
    processor, n_audio: int, question: str, system_prompt: str = SYSTEM_PROMPT
) -> tuple[list[int], list[int]]:
    """A free-form question about one recording: the shared *prefix* (chat header and the n audio tokens) and the
    question's *suffix* (the question and the assistant header), as the chat template renders them together."""
    prefix, tail = _chat_parts(processor, n_audio, "", system_prompt)
    tok = processor.tokenizer  # the user's words are text: a typed "<|im_end|>" does not end the turn
    asked = tok(question.strip(), add_special_tokens=False, split_special_tokens=True).input_ids
    return prefix, asked + tok(tail, add_special_tokens=False).input_ids


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
        processor: the model's ``Qwen2AudioProcessor`` (tokenizer + Whisper feature extractor + chat template).
        audio: a 16-kHz float waveform, anything :func:`vlat.audio.decode.load_audio` reads, or an :class:`EncodedAudio`
            (one decode per recording, shared by its questions).
        answer: 0-based index of the correct option; when given, ``labels`` hold ``(N) option<|im_end|>``.
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
        target = [*tok(format_answer(options, int(answer)), add_special_tokens=False).input_ids, end_of_turn_id(tok)]
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
