"""Shared-prefix evaluation: wall time per question with and without audio-prefix reuse.

For k questions about one 2-minute recording (3,000 audio tokens), logits scoring:
- without reuse: the k questions as one left-padded batch of full prompts (``predict_logits``; the audio tower runs
  on every question's copy of the windows);
- with reuse: audio encoded once, prompt prefix prefilled once, the k question suffixes as one batch
  (``vlat.evaluation.prefix``). Both start from the same tokens and log-mel features, computed once outside the
  timings, so the figure is model compute only.

    python bench/prefix_eval.py            # tiny model, k = 1, 5, 10, 5 rounds
    python bench/prefix_eval.py --model DIR
    python bench/prefix_eval.py --tiny     # smoke run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, timed, write_results  # noqa: E402

from vlat.audio.decode import audio_tokens_for_frames, featurize  # noqa: E402
from vlat.data.collate import MCQACollator  # noqa: E402
from vlat.data.prompts import mcqa_prompt_ids  # noqa: E402
from vlat.evaluation import encode_audio, score_questions  # noqa: E402
from vlat.evaluation.scoring import LOGITS_PREFIX, option_token_ids, predict_logits  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="checkpoint directory (default: a freshly written tiny model)")
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--questions", default="1,5,10")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    if args.tiny:
        args.seconds, args.questions, args.rounds = 30.0, "1,5", 1
    ks = [int(k) for k in args.questions.split(",")]

    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    from vlat.testing import write_tiny_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or write_tiny_model(Path(tmp) / "tiny")
        model = Qwen2AudioForConditionalGeneration.from_pretrained(path, dtype=dtype).to(device).eval()
        processor = AutoProcessor.from_pretrained(path)
    tok, fe = processor.tokenizer, processor.feature_extractor
    wav = np.random.default_rng(0).normal(0, 0.1, int(args.seconds * fe.sampling_rate)).astype(np.float32)
    feats, fmask = featurize(wav, fe)
    n_audio = int(audio_tokens_for_frames(fmask.sum(-1)).sum())
    options = ["a red kite", "a blue car", "a green pen", "a gold ring"]
    questions = [f"Question number {i}: which object is described in the talk?" for i in range(max(ks))]
    opt_ids = option_token_ids(tok)
    collate = MCQACollator(tok.pad_token_id, "left")

    def without_reuse(k):
        exs = []
        for q in questions[:k]:
            prefix, suffix = mcqa_prompt_ids(processor, n_audio, q, options, LOGITS_PREFIX)
            ids = torch.tensor(prefix + suffix)
            exs.append(
                {
                    "input_ids": ids,
                    "attention_mask": torch.ones_like(ids),
                    "input_features": feats,
                    "feature_attention_mask": fmask,
                }
            )
        batch = {key: v.to(device) if isinstance(v, torch.Tensor) else v for key, v in collate(exs).items()}
        return predict_logits(model, batch, opt_ids)

    def with_reuse(k):
        parts = [mcqa_prompt_ids(processor, n_audio, q, options, LOGITS_PREFIX) for q in questions[:k]]
        embeds = encode_audio(model, feats, fmask)
        return score_questions(model, parts[0][0], [p[1] for p in parts], embeds, opt_ids)

    for k in ks:  # warm-up, and the two paths agree
        assert [p.choice for p in without_reuse(k)] == [p.choice for p in with_reuse(k)]
    per_q = {"without": {k: [] for k in ks}, "with": {k: [] for k in ks}}
    for _ in range(args.rounds):
        for k in ks:
            per_q["without"][k].append(timed(lambda k=k: without_reuse(k)) / k)
            per_q["with"][k].append(timed(lambda k=k: with_reuse(k)) / k)
    speedups = {
        f"prefix_speedup_{k}": median([a / b for a, b in zip(per_q["without"][k], per_q["with"][k], strict=True)])
        for k in ks
    }
    write_results(
        "prefix_eval" + ("_tiny" if args.tiny else ""),
        {
            "audio_seconds": args.seconds,
            "audio_tokens": n_audio,
            "rounds": args.rounds,
            "model": str(args.model or "tiny"),
            "seconds_per_question": {side: {str(k): v for k, v in d.items()} for side, d in per_q.items()},
            "median_seconds_per_question": {
                side: {str(k): median(v) for k, v in d.items()} for side, d in per_q.items()
            },
        },
        speedups,
    )


if __name__ == "__main__":
    main()
