"""Partial YaRN hyperparameter sweep: cutoff_dim x temperature on a validation split (Appendix D.2, Figures 5-8).

Each recording's audio is encoded once and reused across the whole grid; each grid point costs one prefix prefill
and one batched suffix pass per recording.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from vlat.audio.decode import load_audio
from vlat.data.prompts import encode_waveform, mcqa_prompt_ids
from vlat.errors import BadSampleError
from vlat.evaluation.prefix import encode_audio, score_questions
from vlat.evaluation.runner import Evaluator
from vlat.evaluation.scoring import LOGITS_PREFIX
from vlat.evaluation.stats import accuracy_interval, distinguishable, paired_difference
from vlat.io import published_files
from vlat.models.loading import check_model_source, text_head_dim
from vlat.rope import AudioRopeConfig, apply_audio_compression, apply_audio_rope

DEFAULT_CUTOFFS = [56, 48, 40, 32, 24, 16, 8]
DEFAULT_TEMPERATURES = [round(0.5 + 0.1 * i, 1) for i in range(12)]  # 0.5 .. 1.6


def check_grid(model: str, cutoffs: list[int], temperatures: list[float]) -> None:
    """Every (cutoff_dim, temperature) of the grid, against the model's ``config.json`` only (before it loads)."""
    check_model_source(model, "--model")
    head_dim = text_head_dim(model)
    for c in cutoffs:
        for t in temperatures:
            AudioRopeConfig("partial_yarn", 1, cutoff_dim=c, temperature=t).check_head_dim(head_dim)


def run_sweep(ev: Evaluator, length: float, cutoffs: list[int], temperatures: list[float], progress=True) -> dict:
    check_grid(ev.spec.model, cutoffs, temperatures)
    groups = (g for g in ev.recordings() if g[0].bucket == length)  # vlat.data.buckets decided
    correct = np.zeros((len(cutoffs), len(temperatures)))
    per_recording, sizes, durations = [], [], []  # each recording's correct answers per setting, its length
    total, skipped = 0, 0
    proc = ev.processor
    comp = ev.compressions[0]
    apply_audio_compression(ev.model, comp)
    for recs in tqdm(groups, desc="sweep", unit="recording", disable=not progress):  # one recording in memory
        try:
            wav = load_audio(recs[0].audio, proc.feature_extractor.sampling_rate, name=recs[0].id)
        except BadSampleError:
            skipped += len(recs)
            continue
        enc = encode_waveform(proc, wav)
        feats, fmask = enc.features, enc.feature_mask
        n_audio = enc.tokens(comp)
        audio = encode_audio(ev.model, feats, fmask)  # once per recording, for the whole grid
        parts = [mcqa_prompt_ids(proc, n_audio, r.question, r.options, LOGITS_PREFIX) for r in recs]
        mine = np.zeros_like(correct)
        for i, c in enumerate(cutoffs):
            for j, t in enumerate(temperatures):
                apply_audio_rope(ev.model, AudioRopeConfig("partial_yarn", ev.tokens, cutoff_dim=c, temperature=t))
                preds = score_questions(
                    ev.model, parts[0][0], [p[1] for p in parts], audio, ev.option_ids, ev.spec.prefill_chunk
                )
                mine[i, j] = sum(p.choice == r.answer for p, r in zip(preds, recs, strict=True))
        correct += mine
        per_recording.append(mine)
        sizes.append(len(recs))
        durations.append(recs[0].duration)
        total += len(recs)
    if total + skipped == 0:
        raise ValueError(f"--length {length}: no recordings in that bucket")
    acc = correct / max(total, 1)
    i, j = np.unravel_index(np.argmax(acc), acc.shape)
    tied = [  # every setting that reaches the best accuracy: a tie is reported as one, not as a winner
        {"cutoff_dim": cutoffs[a], "temperature": temperatures[b]}
        for a, b in zip(*np.nonzero(acc == acc[i, j]), strict=True)
    ]
    best_iv = accuracy_interval([float(m[i, j]) for m in per_recording], sizes) if sizes else None
    alike = []  # settings the data cannot tell from the best: their paired difference's interval includes 0
    for a in range(len(cutoffs)):
        for b in range(len(temperatures)):
            d = paired_difference([float(m[a, b] - m[i, j]) for m in per_recording], sizes) if sizes else None
            if d is not None and not distinguishable(d):
                alike.append({"cutoff_dim": cutoffs[a], "temperature": temperatures[b], "difference": d.estimate})
    return {
        "length_min": length,
        "original_audio_tokens": ev.tokens,
        "audio_compression": str(comp),
        "questions": total,
        "recordings": len(sizes),
        "duration_s": [min(durations), sum(durations) / len(durations), max(durations)] if durations else None,
        "skipped_questions": skipped,
        "cutoffs": cutoffs,
        "temperatures": temperatures,
        "accuracy": acc.tolist(),
        "best": {
            "cutoff_dim": cutoffs[i],
            "temperature": temperatures[j],
            "accuracy": float(acc[i, j]),
            "ci95": None if best_iv is None else [best_iv.low, best_iv.high],
        },
        "tied": tied,
        "indistinguishable_from_best": alike,  # paired 95% intervals over recordings (vlat.evaluation.stats)
    }


def plot_heatmap(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = 100 * np.array(result["accuracy"])
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * acc.shape[1], 1.2 + 0.45 * acc.shape[0]))
    im = ax.imshow(acc, cmap="viridis", aspect="auto")
    ax.set_xticks(range(acc.shape[1]), [f"{t:g}" for t in result["temperatures"]])
    ax.set_yticks(range(acc.shape[0]), [str(c) for c in result["cutoffs"]])
    ax.set_xlabel("attention temperature")
    ax.set_ylabel("cutoff dimension index")
    for (i, j), v in np.ndenumerate(acc):
        ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7, color="w" if v < acc.mean() else "k")
    best = result["best"]
    comp = result.get("audio_compression", "none")
    ax.set_title(
        f"Partial YaRN{'' if comp == 'none' else f' ({comp})'}, {result['length_min']:g} min, window {result['original_audio_tokens']} tokens — best "
        f"cutoff {best['cutoff_dim']}, t={best['temperature']:g}: {100 * best['accuracy']:.1f}%",
        fontsize=9,
    )
    fig.colorbar(im, ax=ax, label="accuracy (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_sweep(out_dir: str | os.PathLike, result: dict) -> Path:
    with published_files(out_dir) as tmp:
        (tmp / "sweep.json").write_text(json.dumps(result, indent=2) + "\n")
        lines = ["cutoff_dim,temperature,accuracy"]
        for i, c in enumerate(result["cutoffs"]):
            for j, t in enumerate(result["temperatures"]):
                lines.append(f"{c},{t:g},{result['accuracy'][i][j]:.6f}")
        (tmp / "sweep.csv").write_text("\n".join(lines) + "\n")
        plot_heatmap(result, tmp / "heatmap.png")
    return Path(out_dir)
