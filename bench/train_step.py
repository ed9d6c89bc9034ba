"""Training-step cost of Qwen2-Audio-7B LoRA fine-tuning on one GPU: time, throughput, peak memory, MFU.

The full-size architecture (published config, ``vlat.testing.full_size``) is built with random bf16 weights
directly on the GPU: no download, and speed and memory do not depend on weight values. Each configuration runs the
package's own training path: ``prepare_for_training`` (frozen model, LoRA on the language model, optional
non-reentrant checkpointing), Partial PI audio RoPE, ``answer_loss`` (logits at the answer tokens only), AdamW on the
LoRA weights; a step = ``batch`` micro-batches of one sample (gradient accumulation, as ``accumulate_grad_batches``)
and one optimizer update.

Inputs: ``minutes`` of audio (25 tokens/s) between 20 prompt tokens and 140 question tokens, 12 of them labelled.
MFU = model FLOPs (``bench/flops.py``: LoRA training, causal attention counted at half, recomputation not counted)
÷ step time ÷ this GPU's measured dense bf16 matmul peak.

    python bench/train_step.py                             # CUDA: 2/5/10 min × q/qkvo × checkpointing on/off
                                                           #       × sdpa (+ flash_attention_2 if installed),
                                                           #       plus 2 min, qkvo, batch 8 accumulated
    python bench/train_step.py --minutes 10 --lora qkvo --checkpointing on
    python bench/train_step.py --tiny                      # CPU smoke run on the tiny model
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import resource
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    ANSWER,
    TEXT_PREFIX,
    TEXT_SUFFIX,
    add_full_size_args,
    bench_model,
    free_memory,
    full_size_setup,
    gib_text,
    median,
    peak_memory_gib,
    results_name,
    synthetic_example,
    timed,
    to_device,
    write_results,
)
from flops import Arch, mfu, train_step_flops  # noqa: E402

from vlat.cliargs import csv_list  # noqa: E402
from vlat.data.collate import MCQACollator, model_inputs  # noqa: E402
from vlat.rope import AudioRopeConfig, apply_audio_rope  # noqa: E402
from vlat.training.lm_head import answer_loss  # noqa: E402
from vlat.training.lora import prepare_for_training  # noqa: E402


@dataclass(frozen=True)
class StepConfig:
    minutes: float
    lora: str
    checkpointing: bool
    attn: str
    batch: int

    @property
    def name(self) -> str:
        ckpt = "ckpt" if self.checkpointing else "nockpt"
        return f"{self.minutes:g}min-{self.lora}-{ckpt}-{self.attn}-b{self.batch}"


def grid(args) -> list[StepConfig]:
    cfgs = [
        StepConfig(m, lora, ckpt == "on", attn, args.batch)
        for attn, m, lora, ckpt in itertools.product(args.attn, args.minutes, args.lora, args.checkpointing)
    ]
    if args.mfu_batch:  # the MFU target's configuration: 2-minute audio, qkvo, batch 8 accumulated
        cfgs += [
            StepConfig(args.mfu_minutes, "qkvo", ckpt == "on", attn, args.mfu_batch)
            for attn, ckpt in itertools.product(args.attn, args.checkpointing)
        ]
    return cfgs


def measure(base, cfg: StepConfig, args, device, dtype, peak: float) -> tuple[object, dict]:
    """Time ``args.steps`` optimizer steps of ``cfg`` on ``base``; returns the base model (LoRA removed) and figures."""
    model = prepare_for_training(base, cfg.lora, args.rank, 2 * args.rank, 0.05, cfg.checkpointing)
    apply_audio_rope(model, AudioRopeConfig("partial_pi", original_audio_tokens=750))
    model.train()
    audio_id = base.config.audio_token_index
    example = synthetic_example(audio_id, cfg.minutes * 60)
    micro = to_device(MCQACollator(0, "right")([example]), device, dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    opt = torch.optim.AdamW(params, lr=1e-5)

    def loss():
        if args.loss == "stock":  # Qwen2AudioForConditionalGeneration's own loss: logits at every position
            return model(**model_inputs(micro)).loss
        return answer_loss(model, micro)

    def step():
        for _ in range(cfg.batch):
            (loss() / cfg.batch).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    result: dict = {"config": cfg.name, **asdict(cfg)}
    try:
        free_memory()
        for _ in range(args.warmup):
            step()
        times = [timed(step) for _ in range(args.steps)]
        step_s = median(times)
        seq_len = micro["input_ids"].shape[1]
        windows = micro["input_features"].shape[0]
        logit_tokens = seq_len if args.loss == "stock" else ANSWER
        flops = train_step_flops(
            Arch.from_config(base.config), seq_len, windows, cfg.batch, cfg.lora, args.rank, logit_tokens
        )
        result.update(
            oom=False,
            seq_len=seq_len,
            audio_tokens=example["audio_tokens"],
            step_times_s=times,
            train_step_s=step_s,
            audio_seconds_per_s=cfg.batch * cfg.minutes * 60 / step_s,
            tokens_per_s=cfg.batch * seq_len / step_s,
            model_flops_per_step=flops,
            mfu=mfu(flops, step_s, peak),
            peak_memory_gib=peak_memory_gib(),
        )
    except torch.cuda.OutOfMemoryError as e:
        result.update(oom=True, error=str(e).splitlines()[0])
    finally:
        opt.zero_grad(set_to_none=True)
        if cfg.checkpointing:
            model.base_model.model.activation_checkpointing_disable()
        base = model.unload()  # LoRA layers out: the next configuration starts from the bare model
        model = opt = params = micro = None  # release before measuring the next configuration
        free_memory()
    assert not any("lora_" in n for n, _ in base.named_parameters()), "LoRA layers left behind"
    return base, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_full_size_args(ap)
    ap.add_argument("--lora", type=csv_list(str), default=["q", "qkvo"])
    ap.add_argument("--checkpointing", type=csv_list(str), default=["on", "off"])
    ap.add_argument(
        "--attn", type=csv_list(str), help="default: sdpa, plus flash_attention_2 when flash-attn is installed"
    )
    ap.add_argument("--batch", type=int, default=1, help="samples per optimizer step in the grid")
    ap.add_argument("--mfu-batch", type=int, default=8, help="extra 2-min qkvo runs at this accumulated batch; 0: none")
    ap.add_argument("--mfu-minutes", type=float, default=2.0)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument(
        "--loss",
        choices=["answer", "stock"],
        default="answer",
        help="answer: vlat.training.lm_head.answer_loss (what train.py runs); stock: the model's own full-sequence-logits loss",
    )
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny model, 30 s audio, 1 warm-up + 2 steps")
    args = ap.parse_args()
    if args.tiny:
        args.size, args.minutes, args.checkpointing, args.mfu_batch, args.mfu_minutes = "tiny", [0.5], ["on"], 2, 0.5
        args.warmup, args.steps = 1, 2
    for flag, values, allowed in (
        ("--lora", args.lora, {"q", "qkvo"}),
        ("--checkpointing", args.checkpointing, {"on", "off"}),
    ):
        if not values or set(values) - allowed:
            ap.error(f"{flag}: expected a comma-separated subset of {sorted(allowed)}, got {values}")
    device, dtype, peak = full_size_setup(args)
    flash = importlib.util.find_spec("flash_attn") is not None and device == "cuda"
    args.attn = args.attn or (["sdpa", "flash_attention_2"] if flash else ["sdpa"])
    results = []
    for attn in args.attn:
        base = bench_model(args.size, device, dtype, attn, args.layers)
        for cfg in (c for c in grid(args) if c.attn == attn):
            base, res = measure(base, cfg, args, device, dtype, peak)
            results.append(res)
            if res["oom"]:
                print(f"{cfg.name}: out of memory", flush=True)
            else:
                print(
                    f"{cfg.name}: {res['train_step_s']:.3f} s/step, {res['audio_seconds_per_s']:.0f} audio-s/s, "
                    f"{res['tokens_per_s']:.0f} tok/s, peak {gib_text(res['peak_memory_gib'])}, MFU {res['mfu']:.1%}",
                    flush=True,
                )
        del base
        free_memory()

    headline = {}
    for r in results:
        if not r["oom"]:
            headline[f"train_step_s/{r['config']}"] = r["train_step_s"]
            if r["peak_memory_gib"] is not None:
                headline[f"peak_memory_gib/{r['config']}"] = r["peak_memory_gib"]
    target = [r for r in results if not r["oom"] and r["batch"] == args.mfu_batch and r["lora"] == "qkvo"]
    for r in results:  # MFU last: the target configuration's is the final line
        if not r["oom"] and r not in target:
            headline[f"mfu/{r['config']}"] = r["mfu"]
    for r in target:
        headline[f"mfu/{r['config']}"] = r["mfu"]
    write_results(
        results_name("train_step", args),
        {
            "size": args.size,
            "layers": args.layers,
            "dtype": str(dtype),
            "loss": args.loss,
            "matmul_peak_flops": peak,
            "flash_attn_installed": flash,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "text_tokens": {"prefix": TEXT_PREFIX, "suffix": TEXT_SUFFIX, "labelled": ANSWER},
            "runs": results,
        },
        headline,
    )


if __name__ == "__main__":
    main()
