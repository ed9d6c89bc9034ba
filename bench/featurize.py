"""Input-pipeline throughput: seconds of audio decoded + resampled + featurised per wall-clock second, one core.

Decodes a 10-minute 44.1-kHz stereo FLAC (soundfile), downmixes and resamples to 16 kHz (soxr), and computes the
log-mel features of its 30-s windows (the model's Whisper feature extractor): the whole of
``vlat.audio.decode.load_audio`` + ``vlat.audio.decode.featurize``, as training and evaluation run them.

    python bench/featurize.py            # 10-minute file, 5 repeats
    python bench/featurize.py --tiny     # smoke run (1 minute, 1 repeat)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, timed, write_results  # noqa: E402

from vlat.audio.decode import featurize, load_audio  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    if args.tiny:
        args.seconds, args.repeats = 60.0, 1
    torch.set_num_threads(1)

    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=128)  # Qwen2-Audio's extractor settings
    rng = np.random.default_rng(0)
    rate = 44100
    n = int(args.seconds * rate)
    t = np.arange(n) / rate
    speechy = 0.2 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.normal(size=n)
    stereo = np.stack([speechy, 0.8 * speechy], axis=1).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.flac"
        sf.write(path, stereo, rate, subtype="PCM_16")
        stages = {"decode_resample": [], "featurize": [], "total": []}
        for _ in range(args.repeats):
            out = {}
            t_load = timed(lambda out=out: out.update(wav=load_audio(path)), sync=False)
            t_feat = timed(lambda out=out: featurize(out["wav"], fe), sync=False)
            stages["decode_resample"].append(t_load)
            stages["featurize"].append(t_feat)
            stages["total"].append(t_load + t_feat)
    factor = args.seconds / median(stages["total"])
    write_results(
        "featurize" + ("_tiny" if args.tiny else ""),
        {
            "audio_seconds": args.seconds,
            "source": "44.1 kHz stereo FLAC",
            "threads": 1,
            "seconds": stages,
            "median_seconds": {k: median(v) for k, v in stages.items()},
        },
        {"featurize_realtime_factor": factor},
    )


if __name__ == "__main__":
    main()
