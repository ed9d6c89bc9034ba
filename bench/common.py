"""Shared helpers of the benchmark scripts: timing, machine description, results files."""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(os.environ.get("VLAT_BENCH_RESULTS", Path(__file__).resolve().parent / "results"))


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


def timed(fn, sync: bool = True) -> float:
    if sync and torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if sync and torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def median(xs):
    return statistics.median(xs)


def write_results(name: str, results: dict, headline: dict[str, float]) -> Path:
    """Write ``bench/results/<name>.json`` (with date, machine, command) and print headline lines last."""
    import sys

    from vlat.io import write_json_atomic

    record = {
        "benchmark": name,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": " ".join(["python", *sys.argv]),
        **results,
        **headline,
    }
    path = RESULTS / f"{name}.json"
    write_json_atomic(path, record)
    for key, value in headline.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    return path
