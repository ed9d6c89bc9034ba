"""Training data loader throughput and memory on the published YODAS2-MCQA layout (2-minute recordings).

A local mirror in the real layout (clip-length folder ``2/``, ``train-*.parquet`` shards, the 16-kHz waveform inline
and repeated for each of a recording's five questions, row groups as large as the data) is streamed by the training
DataLoader exactly as ``train.py`` builds it: the real ``MCQABatchStream`` with the data module's default buffers,
batch 8, decode + resample + 30-s windows + log-mel features + tokenisation + collate, all in worker processes.
Batches arrive as the training process receives them: each recording's features once, in shared memory (the data
module makes the per-question copy on the training device); ``--expand-on-cpu`` also makes that copy here, in the
receiving process, as a CPU-only training run does.

Reported per worker count (median of ``--repeats`` interleaved runs, and their range): audio seconds delivered per
wall second (each question counts its recording's duration, as a training step consumes it), the time to the first
batch, and each worker's peak memory, polled from ``/proc``: resident (``VmHWM``, which
also counts pages shared with the parent process) and private (what the worker itself adds).

    python bench/dataloader.py                   # 48 recordings x 5 questions x 2 min, 1 and 2 workers
    python bench/dataloader.py --tiny
    python bench/dataloader.py --expand-on-cpu   # results in bench/results/dataloader_expand_on_cpu.json
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

from vlat.data import MCQABatchStream, StreamSpec  # noqa: E402
from vlat.data.collate import expand_features  # noqa: E402
from vlat.testing import SynthConfig, write_synth_dataset, write_tiny_model  # noqa: E402


def _children() -> list[int]:
    me = os.getpid()
    out = []
    for task in Path(f"/proc/{me}/task").iterdir():
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _poll_workers(stop: threading.Event, rss: dict[int, int], private: dict[int, int]) -> None:
    """Peak RSS of each child process (``VmHWM``, the kernel's own high-water mark; counts pages shared with the
    parent), and its private memory (``smaps_rollup``: ``Private_Clean + Private_Dirty``, what the worker itself adds)
    sampled once a second (reading it walks the worker's page tables, which slows a worker read often), in kB."""
    tick = 0
    while not stop.is_set():
        for pid in _children():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text() if tick % 4 == 0 else ""
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in (status + rollup).splitlines() if ":" in line)
            if "VmHWM" not in fields:  # exiting: its memory is gone
                continue
            rss[pid] = max(rss.get(pid, 0), int(fields["VmHWM"].split()[0]))
            own = sum(int(fields[k].split()[0]) for k in ("Private_Clean", "Private_Dirty") if k in fields)
            private[pid] = max(private.get(pid, 0), own)
        tick += 1
        stop.wait(0.25)


def run(
    source: str, processor, workers: int, batch_size: int, bucket_buffer: int, buffer_mib: float, expand: bool
) -> dict:
    from torch.utils.data import DataLoader

    stream = MCQABatchStream(
        StreamSpec(source, "train"),
        processor,
        batch_size,
        train=True,
        bucket_buffer=bucket_buffer,
        buffer_mib=buffer_mib,
    )
    rss: dict[int, int] = {}
    private: dict[int, int] = {}
    stop = threading.Event()
    poller = threading.Thread(target=_poll_workers, args=(stop, rss, private), daemon=True)
    poller.start()
    t0 = time.perf_counter()
    audio_s = questions = 0.0
    first_at = None
    for batch in DataLoader(stream, batch_size=None, num_workers=workers):
        if expand:
            expand_features(batch)
        audio_s += sum(batch.get("duration", []))
        questions += batch["n"]
        first_at = first_at or time.perf_counter() - t0
    wall = time.perf_counter() - t0
    stop.set()
    poller.join()
    return {
        "workers": workers,
        "questions": int(questions),
        "audio_seconds": audio_s,
        "wall_s": wall,
        "audio_s_per_s": audio_s / wall,
        "first_batch_s": first_at,
        "peak_rss_gib_per_worker": [kb / 2**20 for kb in sorted(rss.values())],
        "peak_private_gib_per_worker": [kb / 2**20 for kb in sorted(private.values())],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recordings", type=int, default=48)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--row-group-rows", type=int, default=156, help="~1.2 GB row groups at 2 min, as published")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--bucket-buffer", type=int, default=256, help="the data module's default")
    ap.add_argument("--buffer-mib", type=float, default=512, help="the data module's default")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--repeats", type=int, default=5, help="runs per worker count; the headline is their median")
    ap.add_argument("--expand-on-cpu", action="store_true", help="build each question's features in this process")
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    if args.tiny:
        args.recordings, args.seconds, args.shards, args.repeats = 2, 30.0, 2, 1
    from transformers import AutoProcessor

    with tempfile.TemporaryDirectory() as tmp:
        cfg = SynthConfig(
            durations=(args.seconds,),
            videos_per_duration=args.recordings,
            segments_per_video=1,
            test_fraction=0.0,
            layout="yodas2",
            shards=args.shards,
            row_group_rows=args.row_group_rows,
        )
        data, model = Path(tmp) / "mirror", Path(tmp) / "model"
        # generated in a child process, so the workers fork from a lean parent (as in train.py)
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            pool.submit(write_synth_dataset, data, cfg).result()
            pool.submit(write_tiny_model, model).result()
        os.sync()  # the mirror on disk before timing: no writeback of it competes with the workers for the cores
        processor = AutoProcessor.from_pretrained(model)  # the 128-bin Whisper feature extractor of Qwen2-Audio
        runs = [  # interleaved repeats: a slow spell of the machine hits every worker count alike
            run(str(data), processor, int(w), args.batch_size, args.bucket_buffer, args.buffer_mib, args.expand_on_cpu)
            for _ in range(args.repeats)
            for w in args.workers.split(",")
        ]
    by_workers = {w: [r for r in runs if r["workers"] == w] for w in sorted({r["workers"] for r in runs})}
    median = {w: statistics.median(r["audio_s_per_s"] for r in rs) for w, rs in by_workers.items()}
    headline = {f"audio_s_per_s/{w}w": m for w, m in median.items()}
    headline |= {
        f"audio_s_per_s_range/{w}w": [min(r["audio_s_per_s"] for r in rs), max(r["audio_s_per_s"] for r in rs)]
        for w, rs in by_workers.items()
    }
    headline["peak_rss_gib_per_worker_max"] = max(max(r["peak_rss_gib_per_worker"] or [0.0]) for r in runs)
    headline["peak_private_gib_per_worker_max"] = max(max(r["peak_private_gib_per_worker"] or [0.0]) for r in runs)
    if 1 in by_workers and 2 in by_workers:
        headline["speedup_2w_vs_1w"] = median[2] / median[1]  # of the medians
    write_results(
        "dataloader" + ("_expand_on_cpu" if args.expand_on_cpu else "") + ("_tiny" if args.tiny else ""),
        {
            "layout": "yodas2 mirror: clip-length folder, parquet shards, inline 16-kHz float32 audio x5 rows",
            "recordings": args.recordings,
            "seconds_per_recording": args.seconds,
            "shards": args.shards,
            "row_group_rows": args.row_group_rows,
            "batch_size": args.batch_size,
            "bucket_buffer": args.bucket_buffer,
            "buffer_mib": args.buffer_mib,
            "per_question_features_made": "here" if args.expand_on_cpu else "on the training device, not measured",
            "cpu_count": os.cpu_count(),
            "repeats": args.repeats,
            "runs": runs,
        },
        headline,
    )


if __name__ == "__main__":
    main()
