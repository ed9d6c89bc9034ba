"""Padded-token fraction of length-bucketed batches vs random batches, on a realistic length mix.

The mix follows YODAS2-MCQA's construction (paper, Appendix D.3 and Figure 2): recordings chunked to 1, 2, 5 and
10 minutes, plus the incomplete remainder chunks (uniform below each bucket), five questions per recording. Sequence
length = audio tokens (25 per second) + ~160 text tokens. Batches come from the training stream's own planner
(``MCQABatchStream.plans``: rows shuffled, then sorted by length within windows of ``bucket_buffer`` rows); "random"
is the same stream with bucketing off (a window of one batch). Metadata only: there are no audio files, so the
duration that the stream would read from each file's header is looked up in the generated table instead.

    python bench/padding.py               # 4,000 recordings, batch 8, bucket buffer 256 (the data module default)
    python bench/padding.py --tiny
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

from vlat.data import MCQABatchStream, StreamSpec, records  # noqa: E402
from vlat.testing.tiny_model import build_processor, build_tokenizer  # noqa: E402

TEXT_TOKENS = 160
TOKENS_PER_SECOND = 25


def length_mix(n: int, rng) -> np.ndarray:
    full = rng.choice([60, 120, 300, 600], size=n, p=[0.4, 0.3, 0.2, 0.1]).astype(float)
    remainder = rng.random(n) < 0.2  # leftover chunks: shorter than their bucket
    full[remainder] *= rng.uniform(0.1, 1.0, remainder.sum())
    return full


def padded_fraction(plans) -> float:
    pad = real = 0
    for plan in plans:
        lengths = [TEXT_TOKENS + int(r.duration * TOKENS_PER_SECOND) for r in plan]
        pad += max(lengths) * len(lengths) - sum(lengths)
        real += sum(lengths)
    return pad / (pad + real)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recordings", type=int, default=4000)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--bucket-buffer", type=int, default=256)
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    if args.tiny:
        args.recordings = 200
    rng = np.random.default_rng(0)
    durations = length_mix(args.recordings, rng)

    # the planner never touches the processor, but a stream prepares its prompt path once when it is built
    processor = build_processor(build_tokenizer())

    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "train.jsonl"
        with open(table, "w") as f:
            for i, d in enumerate(durations):
                for q in range(5):
                    row = {
                        "id": f"r{i}q{q}",
                        "video_id": f"v{i // 4}",
                        "audio": f"audio/r{i}.flac",
                        "duration": float(d),
                        "question": "Q?",
                        "choices": ["a", "b", "c", "d"],
                        "answer": 0,
                    }
                    f.write(json.dumps(row) + "\n")
        spec = StreamSpec(tmp, "train")
        seconds = {str(Path(tmp) / "audio" / f"r{i}.flac"): float(d) for i, d in enumerate(durations)}
        records.audio_duration = lambda src, name: seconds[src]  # no audio files: the table's durations stand in

        def stream(bucket_buffer):
            return MCQABatchStream(
                spec,
                processor,
                args.batch_size,
                train=True,
                bucket_buffer=bucket_buffer,
            )

        bucketed = padded_fraction(stream(args.bucket_buffer).plans())
        random_ = padded_fraction(stream(args.batch_size).plans())
    write_results(
        "padding" + ("_tiny" if args.tiny else ""),
        {
            "recordings": args.recordings,
            "questions": 5 * args.recordings,
            "batch_size": args.batch_size,
            "bucket_buffer": args.bucket_buffer,
            "mix": "1/2/5/10 min with p=0.4/0.3/0.2/0.1, 20% remainder chunks",
        },
        {"padding_fraction_random": random_, "padding_fraction_bucketed": bucketed},
    )


if __name__ == "__main__":
    main()
