"""Answer scoring for MCQA, two modes.

- ``logits``: one forward over a prompt ending in the answer's opening ``(``; the prediction is the option number
  with the highest next-token logit. Fast and deterministic.
- ``generate``: greedy decoding, then the answer is parsed as ``(N)``, else ``N)``, else ``N.``; an unparsable reply
  counts as wrong and is counted separately.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from vlat.data.collate import model_inputs
from vlat.data.prompts import N_OPTIONS
from vlat.models import forward_kwargs
from vlat.training.lm_head import backbone, logits_at

_PATTERNS = [re.compile(r"\((\d)\)"), re.compile(r"(\d)\)"), re.compile(r"(\d)\.")]
LOGITS_PREFIX = "("  # the answer format "(N) ..." starts with this; logits scoring reads the next token


@dataclass
class Prediction:
    choice: int | None  # 0-based option, None when the reply could not be parsed
    text: str = ""
    probs: list[float] | None = None


def parse_answer(text: str, n_options: int = N_OPTIONS) -> int | None:
    """0-based option index from a reply such as ``"(3) a cat"``; None if no pattern yields a valid option."""
    for pattern in _PATTERNS:
        m = pattern.search(text)
        if m:
            k = int(m.group(1))
            return k - 1 if 1 <= k <= n_options else None
    return None


def option_token_ids(tokenizer, n_options: int = N_OPTIONS) -> list[int]:
    ids = [tokenizer(str(k), add_special_tokens=False).input_ids for k in range(1, n_options + 1)]
    if any(len(x) != 1 for x in ids):
        raise ValueError("tokenizer: option numbers 1..4 must each be a single token for logits scoring")
    return [x[0] for x in ids]


@torch.no_grad()
def predict_logits(model, batch: dict, option_ids: list[int]) -> list[Prediction]:
    """Predictions from one forward over a left-padded batch built with ``assistant_prefix="("``."""
    if not bool((batch["attention_mask"][:, -1] != 0).all()):
        raise ValueError("batch: logits scoring needs left padding (the last column must be real tokens)")
    inputs = {k: v for k, v in model_inputs(batch).items() if k != "labels"}
    hidden = backbone(model, **inputs, use_cache=False).last_hidden_state  # no KV cache, no full-sequence logits
    last = torch.full((hidden.shape[0],), hidden.shape[1] - 1)
    logits = logits_at(model, hidden, last)  # (B, V)
    probs = logits[:, option_ids].float().softmax(-1)
    return [Prediction(int(p.argmax()), probs=p.tolist()) for p in probs]


@torch.no_grad()
def predict_generate(model, tokenizer, batch: dict, max_new_tokens: int = 24, **generate_kwargs) -> list[Prediction]:
    """Greedy replies for a left-padded batch, parsed into option indices."""
    inputs = {k: v for k, v in model_inputs(batch).items() if k != "labels"}
    inputs = forward_kwargs(model, inputs)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, **generate_kwargs)
    replies = tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return [Prediction(parse_answer(r), text=r) for r in replies]
