"""ask.py's latency on one long recording: preparing it once (decode, encode, prefill), then per question the time to
first token and decoding speed, through ``vlat.qa.LongAudioQA`` exactly as ``ask.py`` runs it (greedy).

    python bench/ask_latency.py --tiny                     # CPU: the tiny random model, a 10-minute recording
    python bench/ask_latency.py --model DIR --minutes 10   # any checkpoint (e.g. python -m vlat.testing full-model)

The recording is generated (tones over noise, 16 kHz) and written as FLAC, so decoding is measured as users meet it.
Reported: ``prepare_s`` (decode + encode + prefill, once), per question ``ttft_s`` (question tokens prefilled on the
cached prefix + first token) and ``tokens_per_s`` (every generated token after the first, forced to run
``--new-tokens`` tokens), and ``prefills`` (the prefix was prefilled once for all questions).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, write_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="the tiny random model (built in a temporary directory)")
    ap.add_argument("--model", help="checkpoint directory or hub id (instead of --tiny)")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--questions", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    if not args.tiny and not args.model:
        ap.error("give --tiny or --model")
    import soundfile as sf
    import torch

    from vlat.qa import LongAudioQA

    tmp = Path(tempfile.mkdtemp(prefix="vlat-ask-bench-"))
    model = args.model
    if args.tiny:
        from vlat.testing import write_tiny_model

        model = str(write_tiny_model(tmp / "tiny"))
    t = np.arange(int(args.minutes * 60 * 16000)) / 16000
    rng = np.random.default_rng(0)
    wav = 0.1 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * t / 7) > 0) + rng.normal(0, 0.01, t.size)
    audio = tmp / "recording.flac"
    sf.write(audio, wav.astype(np.float32), 16000)
    qa = LongAudioQA(model, progress=False)
    qa.model.generation_config.eos_token_id = None  # decode --new-tokens tokens whatever the model says
    t0 = time.perf_counter()
    rec = qa.listen(audio, max_new_tokens=args.new_tokens)
    prepare = time.perf_counter() - t0

    class Clock:  # a streamer that timestamps every token
        def __init__(self):
            self.times = []

        def put(self, _):
            self.times.append(time.perf_counter())

        def end(self):
            pass

    ttft, speed = [], []
    for i in range(args.questions):
        clock = Clock()
        start = time.perf_counter()
        qa.ask(
            rec, f"Question {i + 1}: what happens in minute {i + 1}?", max_new_tokens=args.new_tokens, streamer=clock
        )
        ttft.append(clock.times[0] - start)
        if len(clock.times) > 1:
            speed.append((len(clock.times) - 1) / (clock.times[-1] - clock.times[0]))
    name = "ask_latency" + ("_tiny" if args.tiny else "") + (f"_{args.tag}" if args.tag else "")
    write_results(
        name,
        {
            "minutes": args.minutes,
            "audio_tokens": sum(1 for x in rec.prefix_ids if x == qa.model.config.audio_token_index),
            "prefix_tokens": len(rec.prefix_ids),
            "torch_threads": torch.get_num_threads(),
            "ttft_s_each": ttft,
            "tokens_per_s_each": speed,
        },
        {
            "prepare_s": prepare,
            "ttft_s": median(ttft),
            "tokens_per_s": median(speed),
            "prefills": qa.prefills,
        },
    )


if __name__ == "__main__":
    main()
