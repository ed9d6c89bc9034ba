"""What two processes get over one on this machine, per kind of work the training data loader does.

``bench/dataloader.py`` asks two DataLoader workers for >= 1.8x one worker. This script measures the ceiling the
machine sets: each task runs a fixed amount of work in one forked process (about 2-3 s), then split over two, and reports the
speed-up (median of ``--repeats`` interleaved runs):

- ``compute``: small single-threaded matrix products (no memory traffic; the machine's core count);
- ``memory_write``: rewriting one 64-MiB buffer (memory bandwidth);
- ``fresh_pages``: writing newly allocated 64-MiB buffers (page faults: the kernel zeroes every new page);
- ``parquet_decode``: the package's own reader (:func:`vlat.data.sources.read_rows`) over a mirror of the published
  YODAS2-MCQA layout (2-minute recordings inline as ``list<float>``, repeated for each question);
- ``featurize``: :func:`vlat.audio.decode.featurize` of a 2-minute waveform (Qwen2-Audio's Whisper extractor).

    python bench/two_process_scaling.py
    python bench/two_process_scaling.py --tiny
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

MIB = 1 << 20


def _compute(n: int, _ctx) -> None:
    import torch

    torch.set_num_threads(1)
    x = torch.randn(256, 256)
    for _ in range(n * 400):
        x = torch.tanh(x @ x)


def _memory_write(n: int, _ctx) -> None:
    buf = np.empty(64 * MIB, np.uint8)
    for i in range(n * 30):
        buf.fill(i & 0xFF)


def _fresh_pages(n: int, _ctx) -> None:
    for i in range(n * 15):
        np.empty(64 * MIB, np.uint8).fill(i & 0xFF)


def _parquet_decode(n: int, ctx) -> None:
    from vlat.data.sources import read_rows

    source, units = ctx["source"], ctx["units"]
    for u in units[:n]:
        for _ in read_rows(source, source.units[u]):
            pass


def _featurize(n: int, ctx) -> None:
    import torch

    from vlat.audio.decode import featurize

    torch.set_num_threads(1)
    for _ in range(n * 3):
        featurize(ctx["wav"], ctx["fe"])


TASKS = {
    "compute": _compute,
    "memory_write": _memory_write,
    "fresh_pages": _fresh_pages,
    "parquet_decode": _parquet_decode,
    "featurize": _featurize,
}


def _run(task: str, units: int, processes: int, ctx: dict) -> float:
    """Seconds for ``units`` of ``task`` split evenly over ``processes`` forked processes."""
    fork = mp.get_context("fork")
    if task == "parquet_decode":  # each process decodes its own row groups
        shares = [{**ctx, "units": ctx["units"][p::processes]} for p in range(processes)]
        counts = [len(s["units"]) for s in shares]
    else:
        shares, counts = [ctx] * processes, [units // processes] * processes
    t0 = time.perf_counter()
    procs = [fork.Process(target=TASKS[task], args=(c, s)) for c, s in zip(counts, shares, strict=True)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"{task}: a process exited with {p.exitcode}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", type=int, default=24, help="work per task (parquet_decode: the whole mirror)")
    ap.add_argument("--recordings", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    if args.tiny:
        args.units, args.recordings, args.repeats = 2, 4, 1
    from vlat.data.sources import resolve
    from vlat.testing import SynthConfig, write_synth_dataset, write_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        data, model = Path(tmp) / "mirror", Path(tmp) / "model"
        cfg = SynthConfig(
            durations=(120.0,),
            videos_per_duration=args.recordings,
            segments_per_video=1,
            test_fraction=0.0,
            layout="yodas2",
            shards=2,
            row_group_rows=30,  # 6 recordings x 5 questions: row groups are the units two processes split
        )
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            pool.submit(write_synth_dataset, data, cfg).result()
            pool.submit(write_tiny_model, model).result()
        os.sync()  # the mirror on disk before timing: no writeback of it competes for the cores
        from transformers import AutoProcessor

        source = resolve(str(data), "train", None)
        wav = (np.random.default_rng(0).normal(0, 0.1, 120 * 16000)).astype(np.float32)
        ctx = {
            "source": source,
            "units": list(range(len(source.units))),
            "wav": wav,
            "fe": AutoProcessor.from_pretrained(model).feature_extractor,
        }
        times: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.repeats):  # interleaved: a slow spell of the machine hits every task alike
            for task in TASKS:
                for processes in (1, 2):
                    times.setdefault((task, processes), []).append(_run(task, args.units, processes, ctx))
    speedup = {task: statistics.median(times[(task, 1)]) / statistics.median(times[(task, 2)]) for task in TASKS}
    write_results(
        "two_process_scaling" + ("_tiny" if args.tiny else ""),
        {
            "units": args.units,
            "recordings": args.recordings,
            "repeats": args.repeats,
            "seconds": {f"{t}/{p}p": v for (t, p), v in times.items()},
        },
        {f"speedup_2p/{task}": s for task, s in speedup.items()},
    )


if __name__ == "__main__":
    main()
