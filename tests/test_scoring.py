import json

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from vlat.data.collate import MCQACollator
from vlat.data.prompts import build_mcqa_example
from vlat.evaluation.scoring import LOGITS_PREFIX, option_token_ids, parse_answer, predict_generate, predict_logits
from vlat.rope import AudioRopeConfig, apply_audio_rope


@pytest.mark.parametrize(
    "text,expected",
    [
        ("(3) a cat", 2),
        ("The answer is (1) dog", 0),
        ("4) pen", 3),
        ("2. tree", 1),
        ("(7) nope", None),
        ("no idea", None),
        ("", None),
        ("(2) and (3)", 1),
        ("3) x (4) y", 3),
    ],
)
def test_parse_answer(text, expected):
    assert parse_answer(text) == expected


class ForceAnswerFormat(LogitsProcessor):
    """Test-only: forces "(", then one of the digits 1-4 (chosen by the model), then ")" and eos."""

    def __init__(self, tok, prompt_len):
        self.prompt_len = prompt_len
        self.open, self.close = tok.convert_tokens_to_ids("("), tok.convert_tokens_to_ids(")")
        self.digits = option_token_ids(tok)
        self.eos = tok.eos_token_id

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_len
        allowed = [[self.open], self.digits, [self.close]][step] if step < 3 else [self.eos]
        masked = torch.full_like(scores, float("-inf"))
        masked[:, allowed] = scores[:, allowed]
        return masked


@pytest.mark.parametrize("method", ["vanilla", "partial_pi"])
def test_logits_and_generate_modes_agree(synth_dir, processor, tiny_model, method):
    rows = [json.loads(x) for x in open(synth_dir / "test.jsonl")][:6]
    apply_audio_rope(tiny_model, AudioRopeConfig(method, original_audio_tokens=250))
    try:
        tok = processor.tokenizer
        collate = MCQACollator(tok.pad_token_id, padding_side="left")

        def examples(prefix):
            return [
                build_mcqa_example(
                    processor,
                    str(synth_dir / r["audio"]),
                    r["question"],
                    r["choices"],
                    assistant_prefix=prefix,
                    name=r["id"],
                )
                for r in rows
            ]

        by_logits = predict_logits(tiny_model, collate(examples(LOGITS_PREFIX)), option_token_ids(tok))
        gen_batch = collate(examples(""))
        force = ForceAnswerFormat(tok, gen_batch["input_ids"].shape[1])
        by_generate = predict_generate(
            tiny_model, tok, gen_batch, max_new_tokens=4, logits_processor=LogitsProcessorList([force])
        )
    finally:
        apply_audio_rope(tiny_model, AudioRopeConfig("vanilla"))
    assert all(p.text.startswith("(") and p.choice is not None for p in by_generate)
    assert [p.choice for p in by_generate] == [p.choice for p in by_logits]
    assert all(abs(sum(p.probs) - 1) < 1e-5 for p in by_logits)


def test_logits_mode_rejects_right_padding(processor, tiny_model):
    import numpy as np

    tok = processor.tokenizer
    exs = [
        build_mcqa_example(processor, np.zeros(16000 * n, np.float32), "Q?", list("abcd"), assistant_prefix="(")
        for n in (2, 5)
    ]
    with pytest.raises(ValueError, match="left padding"):
        predict_logits(tiny_model, MCQACollator(tok.pad_token_id, "right")(exs), option_token_ids(tok))
