"""A tiny Qwen2-Audio that hears, trained offline: the miniature's stand-in for Qwen2-Audio-7B-Instruct.

The paper starts from a model that understands audio of at most 30 s. This builds one at CPU scale: the tiny
architecture (stock ``Qwen2AudioForConditionalGeneration``) is trained fully, audio tower, projector and language
model, on freshly generated clips of at most 30 s (:mod:`vlat.testing.synth_data`: which marker, in which pitch),
through the package's own prompt format, collator and loss, so ``train.py`` / ``evaluate.py`` then meet exactly the
prompts it learnt. Two stages, deterministic for a seed on a given machine:

1. the audio tower learns to tell tones and markers from noise, frame by frame (a throwaway linear head on its 25-Hz
   output; the 16 marker-and-pitch classes need about 200 steps to reach 99% of frames);
2. with the tower frozen, projector and language model learn, in every step: to answer the five question kinds
   (next-token loss on ``(N) option<|im_end|>``), to name every sound of a clip in order (a transcription task that
   teaches the language model where in the audio run each moment lies), and the prompts' text itself (audio-free
   prompts with random answers: a real model's language model arrives knowing its text; a random one would have to
   find across 750 audio tokens that the option after ``(N)`` is the N-th).

Measured while designing it (2 CPU cores): without the frozen tower and the transcription task, the answers stayed
at or near chance for hundreds of steps, and options in random order (a name-to-number lookup) stayed at chance
throughout; hence options in a fixed order (:data:`vlat.testing.synth_data.BASE_TASK`). Questions that must first
pick one of five markers in a recording by name stayed near chance (35-57% at 30 s after 500-600 steps, with 2 or 3
layers), so a recording holds one marker.

Its accuracy at 30 s on held-out clips is measured at the end and written to ``vlat_base_model.json`` beside the
weights. Vanilla positions were all it saw: how it fares on 1-5 minutes is the miniature's experiment.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vlat.io import make_staging_dir, publish_dir
from vlat.testing.synth_data import (
    BASE_TASK,
    MARKER_HZ,
    MARKERS,
    PITCHES,
    QUESTIONS,
    SAMPLE_RATE,
    TONES,
    YODAS2_SENTENCE,
    SynthConfig,
    draw_scene,
    questions_for,
    render_events,
)
from vlat.testing.tiny_model import TinyModelConfig, build_processor, build_tiny_model, build_tokenizer

TOKENS_PER_SECOND = 25  # Qwen2-Audio's encoder output rate (one token per 40 ms)
TRANSCRIBE = "Name every sound in order."  # stage 2's transcription task


@dataclass(frozen=True)
class BaseModelConfig:
    """What ``python -m vlat.testing base-model`` trains; defaults take a few minutes on 2 CPU cores."""

    model: TinyModelConfig = field(default_factory=lambda: TinyModelConfig(initializer_range=0.02))
    task: SynthConfig = BASE_TASK
    clip_seconds: tuple[float, ...] = (20.0, 25.0, 30.0)  # the base model never hears more than 30 s
    text_rows: int = 8  # stage 2: audio-free prompts with random answers per step (the language model's text)
    transcribe: bool = True  # stage 2: also TRANSCRIBE about each clip ("blue coral bell high amber ...")
    freeze_tower: bool = True  # stage 2 trains the projector and language model on the stage-1 tower
    tower_steps: int = 200  # stage 1: frame-level tone and marker classification (16 marker classes need ~200)
    steps: int = 600  # stage 2: question answering
    recordings_per_step: int = 4
    questions_per_recording: int = 2
    learning_rate: float = 3e-3
    warmup_steps: int = 30
    eval_recordings: int = 100  # held-out 30-s clips (x 2 questions) measured at the end
    eval_every: int = 0  # >0: also measure on the first 8 of them every this many steps (progress only)
    seed: int = 0


def task_corpus(task: SynthConfig = BASE_TASK) -> list[str]:
    """Text the base tokenizer learns its merges from: the chat template's words, the prompt and the task."""
    from vlat.data.prompts import INSTRUCTION, SYSTEM_PROMPT

    options = [f"({i}) {name}" for i in range(1, 5) for name in (*MARKERS, *PITCHES)]
    words = [
        SYSTEM_PROMPT,
        INSTRUCTION,
        YODAS2_SENTENCE,
        *(text for text, _ in QUESTIONS.values()),
        "system",
        "user",
        "assistant",
        "Audio 1:",
    ]
    words += [TRANSCRIBE, " ".join(MARKERS), " ".join(PITCHES), " ".join(TONES)]
    return words + options


class _Clips:
    """Fresh clips of the task, one numpy generator for the whole run (deterministic for a seed): each call gives
    ``(features, questions, per-token labels, transcript)``: a token's labels are its background tone (0: none) and
    the marker sounding with it in its pitch (0: none); the transcript names every slot's tone in order, the marker
    and its pitch after its slot's tone."""

    def __init__(self, task: SynthConfig, processor, seed: int):
        self.task, self.processor = task, processor
        self.rng = np.random.default_rng(seed)

    def __call__(self, seconds: float):
        from vlat.data.prompts import encode_recording

        task = self.task
        scene = draw_scene(int(seconds // task.slot_seconds), self.rng)
        wav, starts = render_events(scene, seconds, task, self.rng)
        frames = torch.zeros((int(seconds * TOKENS_PER_SECOND), 2), dtype=torch.long)  # 0 = no tone / no marker
        tone_samples = int(task.tone_seconds * SAMPLE_RATE)
        per_token = SAMPLE_RATE // TOKENS_PER_SECOND
        events = list(MARKER_HZ)
        for i, (name, start) in enumerate(zip(scene.tones, starts, strict=True)):
            span = slice(round(start / per_token), (start + tone_samples) // per_token)
            frames[span, 0] = 1 + list(TONES).index(name)
            if i == scene.slot:
                frames[span, 1] = 1 + events.index((scene.marker, scene.pitch))
        enc = encode_recording(self.processor, wav)
        words = [*scene.tones[: scene.slot + 1], scene.marker, scene.pitch, *scene.tones[scene.slot + 1 :]]
        return enc, questions_for(scene, self.rng, task), frames, words


def _transcription(processor, enc, seq: list[str]) -> dict:
    from vlat.data.prompts import IGNORE_INDEX, end_of_turn_id, mcqa_prompt_ids

    tok = processor.tokenizer
    prefix, _ = mcqa_prompt_ids(processor, enc.tokens(), "x", ["x"] * 4)
    ask = tok(f"{TRANSCRIBE}<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False).input_ids
    target = [*tok(" ".join(seq), add_special_tokens=False).input_ids, end_of_turn_id(processor)]
    ids = torch.tensor([*prefix, *ask, *target])
    labels = torch.tensor([IGNORE_INDEX] * (len(prefix) + len(ask)) + target)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
        "input_features": enc.features,
        "feature_attention_mask": enc.feature_mask,
    }


def _frame_loss(model, head, clips: list) -> tuple[torch.Tensor, float]:
    """Per 25-Hz frame: which background tone sounds (or none), and which marker in which pitch (or none)."""
    feats = torch.cat([enc.features for enc, *_ in clips])
    hidden = model.model.audio_tower(feats).last_hidden_state  # (clips, 750, d): one 30-s window each
    labels = torch.full((*hidden.shape[:2], 2), -100, dtype=torch.long)
    for i, (_, _, frames, _) in enumerate(clips):
        labels[i, : len(frames)] = frames
    logits = head(hidden)
    tone_logits, event_logits = logits[..., : 1 + len(TONES)], logits[..., 1 + len(TONES) :]
    keep = labels[..., 0] >= 0
    tone, event = labels[..., 0][keep], labels[..., 1][keep]
    acc = float((event_logits.argmax(-1)[keep] == event).float().mean())
    loss = F.cross_entropy(tone_logits[keep], tone) + F.cross_entropy(event_logits[keep], event)
    return loss, acc


def _text_batch(processor, rng: np.random.Generator, task: SynthConfig, n: int, model):
    """(logits, targets) of a batch of audio-free prompts with random answers: every next token is a target."""
    from vlat.data.prompts import end_of_turn_id, format_answer, mcqa_prompt_ids

    tok = processor.tokenizer
    rows = []
    for _ in range(n):
        kind = list(QUESTIONS)[int(rng.integers(len(QUESTIONS)))]
        text, options = QUESTIONS[kind]
        options = list(options) if task.fixed_options else [options[i] for i in rng.permutation(len(options))]
        prefix, suffix = mcqa_prompt_ids(processor, 0, text, options)
        answer = tok(format_answer(options, int(rng.integers(4))), add_special_tokens=False).input_ids
        rows.append(torch.tensor([*prefix, *suffix, *answer, end_of_turn_id(processor)]))
    ids = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=-100)
    mask = ids != -100
    logits = model(input_ids=ids.clamp(min=0), attention_mask=mask.long()).logits[:, :-1]
    keep = mask[:, 1:]
    return logits[keep], ids[:, 1:][keep]


def accuracy(model, processor, recordings: list, batch_size: int = 20) -> tuple[float, dict[str, float]]:
    """Logits-scoring accuracy over the recordings' questions (the evaluation's method), overall and per kind."""
    from vlat.data.collate import MCQACollator
    from vlat.data.prompts import build_mcqa_example
    from vlat.evaluation.scoring import LOGITS_PREFIX, option_token_ids, predict_logits

    tok = processor.tokenizer
    collate = MCQACollator(tok.pad_token_id, padding_side="left")
    items = [
        (build_mcqa_example(processor, enc, q, opts, assistant_prefix=LOGITS_PREFIX), ans, kind)
        for enc, qs, *_ in recordings
        for kind, q, opts, ans in qs
    ]
    right: dict[str, list[bool]] = {}
    was_training = model.training
    model.eval()
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        preds = predict_logits(model, collate([ex for ex, _, _ in chunk]), option_token_ids(tok))
        for p, (_, ans, kind) in zip(preds, chunk, strict=True):
            right.setdefault(kind, []).append(p.choice == ans)
    model.train(was_training)
    every = [r for rs in right.values() for r in rs]
    return sum(every) / len(every), {k: sum(v) / len(v) for k, v in right.items()}


def train_base_model(cfg: BaseModelConfig = BaseModelConfig(), progress=print):
    """Train and return ``(model, processor, record)``; ``record`` holds the settings, times and accuracy."""
    from vlat.data.collate import MCQACollator
    from vlat.data.prompts import build_mcqa_example
    from vlat.training.lm_head import answer_loss

    torch.manual_seed(cfg.seed)
    tokenizer = build_tokenizer(corpus=task_corpus(cfg.task))
    processor = build_processor(tokenizer)
    model = build_tiny_model(tokenizer, cfg.model)
    model.set_attn_implementation("sdpa")
    model.train()
    clips = _Clips(cfg.task, processor, cfg.seed)
    held_out_clips = _Clips(cfg.task, processor, cfg.seed + 10_000)
    held_out = [held_out_clips(30.0) for _ in range(cfg.eval_recordings)]
    started = time.perf_counter()

    # stage 1: the audio tower tells tones from noise, frame by frame
    head = torch.nn.Linear(cfg.model.audio_d_model, 1 + len(TONES) + 1 + len(MARKER_HZ))
    tower_params = [*model.model.audio_tower.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(tower_params, lr=cfg.learning_rate)
    frame_acc = 0.0
    for step in range(cfg.tower_steps):
        batch = [clips(float(clips.rng.choice(cfg.clip_seconds))) for _ in range(2 * cfg.recordings_per_step)]
        loss, frame_acc = _frame_loss(model, head, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % 20 == 0:
            progress(
                f"tower {step + 1}/{cfg.tower_steps}: frame loss {loss.item():.3f}, frame accuracy {frame_acc:.3f}"
            )

    # stage 2: the model answers the questions
    model.model.audio_tower.requires_grad_(not cfg.freeze_tower)
    collate = MCQACollator(tokenizer.pad_token_id, padding_side="right")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.01, betas=(0.9, 0.98))
    losses: list[float] = []
    for step in range(cfg.steps):
        warm = min(1.0, (step + 1) / cfg.warmup_steps)
        for group in opt.param_groups:
            group["lr"] = cfg.learning_rate * warm * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        examples, heard = [], []
        for _ in range(cfg.recordings_per_step):
            enc, qs, _, seq = clips(float(clips.rng.choice(cfg.clip_seconds)))
            heard.append((enc, seq))
            for i in clips.rng.choice(len(qs), size=cfg.questions_per_recording, replace=False):
                _, q, opts, ans = qs[int(i)]
                examples.append(build_mcqa_example(processor, enc, q, opts, ans))
        loss = answer_loss(model, collate(examples))
        if cfg.transcribe:
            loss = loss + answer_loss(model, collate([_transcription(processor, enc, seq) for enc, seq in heard]))
        if cfg.text_rows:
            loss = loss + F.cross_entropy(*_text_batch(processor, clips.rng, cfg.task, cfg.text_rows, model))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % 50 == 0:
            progress(f"answers {step + 1}/{cfg.steps}: loss {np.mean(losses[-50:]):.3f}")
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0:
            with torch.no_grad():
                acc, per_kind = accuracy(model, processor, held_out[:8])
            progress(f"answers {step + 1}/{cfg.steps}: accuracy {acc:.3f} {per_kind}")
    train_s = time.perf_counter() - started

    with torch.no_grad():
        acc, per_kind = accuracy(model, processor, held_out)
    progress(f"accuracy at 30 s on {cfg.eval_recordings * len(QUESTIONS)} held-out questions: {acc:.3f}")
    record = {
        "config": asdict(cfg),
        "train_seconds": train_s,
        "torch_threads": torch.get_num_threads(),
        "final_frame_accuracy": frame_acc,
        "final_loss": float(np.mean(losses[-50:])) if losses else None,
        "accuracy_30s": acc,
        "accuracy_30s_questions": cfg.eval_recordings * len(QUESTIONS),
        "accuracy_30s_per_kind": per_kind,
    }
    return model, processor, record


RECORD = "vlat_base_model.json"


def ensure_base_model(out_dir: str | os.PathLike, cfg: BaseModelConfig = BaseModelConfig(), progress=print) -> bool:
    """The base model in ``out_dir``, trained unless the one there was made with ``cfg`` (its ``RECORD``);
    True when it was (re)trained."""
    out = Path(out_dir)
    try:
        made_with = json.loads((out / RECORD).read_text()).get("config")
    except (OSError, ValueError):
        made_with = None
    if made_with == json.loads(json.dumps(asdict(cfg))):
        return False
    write_base_model(out, cfg, progress=progress)
    return True


def write_base_model(out_dir: str | os.PathLike, cfg: BaseModelConfig = BaseModelConfig(), progress=print) -> Path:
    """Train the base model and write it (weights, processor, ``vlat_base_model.json``) atomically to ``out_dir``;
    an unwritable destination fails before training."""
    out = Path(out_dir)
    tmp = make_staging_dir(out)
    try:
        model, processor, record = train_base_model(cfg, progress)
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / RECORD).write_text(json.dumps(record, indent=2) + "\n")
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
