"""The MCQA prompt in Qwen2-Audio's chat format, with the whole recording as one contiguous audio span.

One recording -> ``<|audio_bos|>`` + n x ``<|AUDIO|>`` + ``<|audio_eos|>`` (n = tokens of all its 30-s windows), so the
audio-only RoPE sees a single run. Options are numbered ``(1)``..``(4)`` and the expected answer is
``(N) option text`` (the paper's format, Figure 4); prompt tokens are masked out of the loss with -100.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vlat.audio import AudioSource, audio_tokens_for_frames, featurize, load_audio
from vlat.errors import BadSampleError

N_OPTIONS = 4
SYSTEM_PROMPT = "You are a helpful assistant."
INSTRUCTION = (
    'Answer the multiple-choice question about the audio. Reply only in the format "(NUMBER) STATEMENT", '
    'for example "(4) A pen", with no other text. Use information from the whole audio.'
)
IGNORE_INDEX = -100


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
    tok = processor.tokenizer
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {
            "role": "user",
            "content": [
                {"type": "audio", "audio": "audio"},
                {"type": "text", "text": f"{instruction}\n\n{_QUESTION_SLOT}"},
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
    suffix = tok(format_question(question, options) + tail + assistant_prefix, add_special_tokens=False).input_ids
    return prefix, suffix


def build_mcqa_example(
    processor,
    audio: AudioSource | np.ndarray,
    question: str,
    options: Sequence[str],
    answer: int | None = None,
    *,
    assistant_prefix: str = "",
    max_audio_seconds: float | None = None,
    instruction: str = INSTRUCTION,
    name: str = "sample",
) -> dict[str, torch.Tensor]:
    """Tokens and features of one MCQA question about one recording (any length).

    Args:
        processor: the model's ``Qwen2AudioProcessor`` (tokenizer + Whisper feature extractor + chat template).
        audio: a 16-kHz float waveform, or anything :func:`vlat.audio.load_audio` reads.
        answer: 0-based index of the correct option; when given, ``labels`` hold ``(N) option<|im_end|>``.
        assistant_prefix: text appended after the assistant header, outside the labels (``"("`` for logits scoring).
        name: how errors refer to this sample.

    Returns ``input_ids``, ``attention_mask`` (L,), ``input_features`` (W, 128, 3000), ``feature_attention_mask``
    (W, 3000) and, with ``answer``, ``labels`` (L,).
    """
    validate_mcqa(question, options, answer, name)
    fe, tok = processor.feature_extractor, processor.tokenizer
    src = (audio, fe.sampling_rate) if isinstance(audio, np.ndarray) else audio
    wav = load_audio(src, fe.sampling_rate, max_seconds=max_audio_seconds, name=name)
    features, feature_mask = featurize(wav, fe)
    n_audio = int(audio_tokens_for_frames(feature_mask.sum(-1)).sum())

    prefix, suffix = mcqa_prompt_ids(processor, n_audio, question, options, assistant_prefix, instruction)
    prompt = prefix + suffix
    target = []
    if answer is not None:
        target = tok(format_answer(options, int(answer)) + tok.eos_token, add_special_tokens=False).input_ids
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
