"""Training speed through ``train.py`` itself: a config's real batches, Lightning's precision plugin, the fast path
and the plain path side by side in one run.

Each variant is one ``python train.py --config CONFIG`` run (``configs/vlat_default.yaml`` by default: batch 8,
bf16-mixed, qkvo LoRA, VLAT factors, its DataLoader workers) on a local mirror of the published layout holding
``--minutes``-long recordings, for ``--warmup + --steps`` optimizer steps, validation off. ``StepTimer`` (appended to
the config's callbacks) records per step: the optimizer step's time (``training_step``: forward, backward, AdamW;
CUDA synchronised), the wall time between steps (data wait included), the batch's real tokens, its peak memory
and the layers the checkpointing policy recomputed. MFU = model FLOPs of the real batch (``bench/flops.py``,
per sample at its unpadded length, logits at its labelled tokens) / step time / this GPU's measured matmul peak.

Variants: ``fast`` = the config as shipped (``fused_kernels: auto``, ``gradient_checkpointing: auto``); ``plain`` =
``fused_kernels: off``, ``gradient_checkpointing: full`` (every layer recomputed, as before the policy).

    python -m vlat.testing full-model .full-model            # once: random weights at the published widths
    python bench/train_loop.py --model .full-model            # CUDA: 2-minute batches of 8, fast vs plain
    python bench/train_loop.py --tiny                         # CPU smoke run: tiny model, 30 s, batch 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

VARIANTS = {
    "fast": [],  # the config as shipped
    "plain": ["--model.fused_kernels", "off", "--model.gradient_checkpointing", "full"],
}


class StepTimer(Callback):
    """Per optimizer step: time, tokens, peak memory, checkpointed layers, model FLOPs; written to ``out`` (JSON)."""

    def __init__(self, out: str, rank: int = 8):
        self.out, self.rank, self.steps, self._start, self._prev = out, rank, [], None, None

    def _sync(self, device):
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._sync(module.device)
        now = time.perf_counter()
        self._wall = None if self._prev is None else now - self._prev
        self._prev = self._start = now
        if module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(module.device)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        from flops import Arch, train_step_flops

        self._sync(module.device)
        seconds = time.perf_counter() - self._start
        arch = Arch.from_config(module.model.config)
        lens = batch["attention_mask"].sum(-1).tolist()
        answers = (batch["labels"] != -100).sum(-1).tolist()
        windows = batch["input_features"].shape[0] // max(1, len(lens))
        flops = sum(
            train_step_flops(arch, n, windows, 1, module.hparams.lora_targets, self.rank, a)
            for n, a in zip(lens, answers, strict=True)
        )
        ckpt = trainer.callback_metrics.get("train/checkpointed_layers")
        self.steps.append(
            {
                "step_s": seconds,
                "wall_since_last_s": self._wall,
                "samples": len(lens),
                "tokens": int(sum(lens)),
                "padded_tokens": int(batch["input_ids"].numel()),
                "model_flops": flops,
                "checkpointed_layers": None if ckpt is None else float(ckpt),
                "peak_memory_gib": torch.cuda.max_memory_allocated(module.device) / 2**30
                if module.device.type == "cuda"
                else None,
            }
        )
        Path(self.out).write_text(json.dumps(self.steps))


def run_variant(name: str, args, model: str, data: str, work: Path) -> list[dict]:
    out = work / f"{name}.json"
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "--config",
        args.config,
        "--model.model_name_or_path",
        model,
        "--data.source",
        data,
        "--data.train_lengths",
        f"[{args.minutes:g}]",
        "--data.val_split",
        "null",
        "--trainer.max_steps",
        str(args.warmup + args.steps),
        "--trainer.logger.init_args.save_dir",
        str(work / name),
        "--trainer.default_root_dir",
        str(work / name),
        "--trainer.callbacks+=train_loop.StepTimer",
        f"--trainer.callbacks.out={out}",
        *VARIANTS[name],
        *args.extra,
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "bench"), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    if res.returncode != 0 and "out of memory" in res.stderr.lower():
        return [{"oom": True, "error": res.stderr.strip().splitlines()[-1]}]
    if res.returncode != 0:
        raise SystemExit(f"train.py failed for {name}:\n{res.stderr[-3000:]}")
    return json.loads(out.read_text())[args.warmup :]


def summarize(steps: list[dict], peak: float) -> dict:
    if steps and steps[0].get("oom"):
        return {"oom": True, "error": steps[0]["error"]}
    step_s = statistics.median(s["step_s"] for s in steps)
    flops = statistics.median(s["model_flops"] for s in steps)
    mems = [s["peak_memory_gib"] for s in steps if s["peak_memory_gib"] is not None]
    return {
        "oom": False,
        "steps": steps,
        "median_step_s": step_s,
        "median_wall_between_steps_s": statistics.median(
            s["wall_since_last_s"] for s in steps if s["wall_since_last_s"]
        ),
        "median_model_flops": flops,
        "mfu": flops / step_s / peak,
        "peak_memory_gib": max(mems) if mems else None,
        "checkpointed_layers": sorted({s["checkpointed_layers"] for s in steps}, key=lambda x: (x is None, x)),
    }


def main() -> None:
    from common import full_size_setup, write_results

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="checkpoint directory (python -m vlat.testing full-model DIR); default: tiny")
    ap.add_argument("--config", default=str(ROOT / "configs" / "vlat_default.yaml"))
    ap.add_argument("--minutes", type=float, default=2.0, help="recording length (the config trains on 2 min)")
    ap.add_argument("--recordings", type=int, default=40, help="recordings in the mirror (5 questions each)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--variants", default="fast,plain")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny model, smoke config, 30 s, batch 2")
    ap.add_argument("--tag")
    ap.add_argument("extra", nargs="*", help="more train.py overrides, after --")
    args = ap.parse_args()
    from vlat.testing import SynthConfig, write_synth_dataset, write_tiny_model

    if args.tiny:
        args.config, args.minutes, args.recordings, args.steps, args.warmup = (
            str(ROOT / "configs" / "smoke.yaml"),
            0.5,
            4,
            2,
            1,
        )
        args.extra = [*args.extra, "--data.batch_size", "2", "--data.num_workers", "0"]
    args.size = "full" if args.model else "tiny"
    _, dtype, peak = full_size_setup(args)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = args.model or str(write_tiny_model(work / "tiny"))
        data = write_synth_dataset(
            work / "mirror",
            SynthConfig(
                durations=(args.minutes * 60,),
                videos_per_duration=args.recordings,
                segments_per_video=1,
                test_fraction=0.0,
                layout="yodas2",
            ),
        )
        results = {}
        for name in args.variants.split(","):
            results[name] = summarize(run_variant(name, args, str(Path(model).resolve()), str(data), work), peak)
            r = results[name]
            if r["oom"]:
                print(f"{name}: out of memory", flush=True)
            else:
                print(
                    f"{name}: {r['median_step_s']:.3f} s/step, MFU {r['mfu']:.1%}, peak "
                    f"{r['peak_memory_gib'] if r['peak_memory_gib'] is not None else 'n/a'} GiB, checkpointed layers "
                    f"{r['checkpointed_layers']}",
                    flush=True,
                )
    headline = {f"step_s/{k}": r["median_step_s"] for k, r in results.items() if not r["oom"]}
    headline |= {f"mfu/{k}": r["mfu"] for k, r in results.items() if not r["oom"]}
    if all(k in results and not results[k]["oom"] for k in ("fast", "plain")):
        headline["speedup_fast_vs_plain"] = results["plain"]["median_step_s"] / results["fast"]["median_step_s"]
    write_results(
        "train_loop" + ("_tiny" if args.tiny else "") + (f"-{args.tag}" if args.tag else ""),
        {
            "config": Path(args.config).name,
            "model": args.model or "tiny",
            "minutes": args.minutes,
            "dtype": str(dtype),
            "matmul_peak_flops": peak,
            "variants": {k: [*VARIANTS[k], *args.extra] for k in results},
            "results": results,
        },
        headline,
    )


if __name__ == "__main__":
    main()
