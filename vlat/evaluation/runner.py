"""Evaluation over adapters x RoPE methods x length buckets (the paper's Tables 1, 2, 4, 6)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vlat.audio import audio_tokens_for_frames, featurize, load_audio, seconds_to_tokens
from vlat.checkpointing import adapter_dir_for, adapter_files
from vlat.collate import MCQACollator
from vlat.data.records import ColumnMapping, Record, nearest_bucket, normalize
from vlat.data.sources import Source, SourceError, read_rows, resolve
from vlat.data.stream import StreamSpec, iter_records
from vlat.errors import BadSampleError, ConfigError
from vlat.evaluation.prefix import encode_audio, score_questions
from vlat.model_loading import check_model_source, load_model, load_processor, text_head_dim
from vlat.prompts import build_mcqa_example, mcqa_prompt_ids
from vlat.rope import METHODS, AudioRopeConfig, apply_audio_rope, current_config, warn_if_beyond_context
from vlat.scoring import LOGITS_PREFIX, option_token_ids, predict_generate


class EvalInputError(ConfigError):
    """Bad evaluation input (missing adapter, wrong base model, unusable dataset): reported in one line."""


@dataclass
class EvalSpec:
    model: str
    data: str
    adapters: list[str] = field(default_factory=list)  # DIR, .ckpt, or LABEL=PATH
    split: str = "test"
    methods: list[str] = field(default_factory=lambda: ["vanilla", "partial_pi"])
    original_audio_seconds: float = 30.0
    cutoff_dim: int = 0
    temperature: float = 1.0
    lengths: list[float] | None = None  # None: every length the data has
    scoring: str = "logits"
    max_questions: int | None = None
    dtype: str = "auto"
    attn_implementation: str = "auto"
    columns: ColumnMapping = field(default_factory=ColumnMapping)


def split_label(entry: str) -> tuple[str, str]:
    """``LABEL=PATH`` -> (LABEL, PATH); a path alone -> ("", path). Lightning's names hold ``=``
    (``runs/x/checkpoints/epoch=0-step=60.ckpt``): an existing path, or a "label" with a ``/``, is a path."""
    label, sep, path = entry.partition("=")
    if not sep or "/" in label or not label or Path(entry).exists():
        return "", entry
    return label, path


def _checkpoint_adapter(entry: str, ckpt: Path) -> Path:
    """The adapter saved inside ``ckpt`` (byte for byte, in a temporary directory); ``<name>-adapter/`` beside it for
    checkpoints that carry none."""
    if not ckpt.is_file():
        raise EvalInputError(f"--adapter {entry}: no such checkpoint")
    try:
        files = adapter_files(ckpt)
    except Exception as e:
        raise EvalInputError(f"--adapter {entry}: unreadable checkpoint ({type(e).__name__}: {e})") from e
    if files is None:
        return adapter_dir_for(ckpt)
    out = Path(tempfile.mkdtemp(prefix=f"vlat-{ckpt.stem}-adapter-"))
    atexit.register(shutil.rmtree, out, True)
    for name, data in files.items():
        (out / name).write_bytes(data)
    return out


def resolve_adapters(entries: list[str]) -> list[tuple[str, Path]]:
    """``DIR``, ``X.ckpt`` (its ``X-adapter/``) or ``LABEL=PATH`` -> (label, adapter dir); errors name the path."""
    out = []
    for entry in entries:
        label, path = split_label(entry)
        p = Path(path)
        if p.suffix == ".ckpt":
            p = _checkpoint_adapter(entry, p)
        if not (p / "adapter_config.json").exists():
            raise EvalInputError(f"--adapter {entry}: no PEFT adapter at {p} (expected adapter_config.json)")
        if not label:  # runs/<run>/checkpoints/<name>-adapter (or <name>.ckpt) -> "<run>/<name>"
            named = adapter_dir_for(path) if Path(path).suffix == ".ckpt" else p
            label = (
                f"{named.parent.parent.name}/{named.name.removesuffix('-adapter')}"
                if named.parent.name == "checkpoints"
                else named.name
            )
        out.append((label, p))
    labels = [label for label, _ in out]
    if len(set(labels)) != len(labels):
        raise EvalInputError(f"--adapter: labels must be unique, got {labels} (use LABEL=PATH)")
    return out


def rope_config(method: str, spec: EvalSpec, tokens: int) -> AudioRopeConfig:
    if method == "partial_yarn":
        return AudioRopeConfig(method, tokens, cutoff_dim=spec.cutoff_dim, temperature=spec.temperature)
    return AudioRopeConfig(method, tokens)


def open_source(spec: EvalSpec) -> Source:
    """Resolve ``--data`` and check its first row has a known layout (one-line error before any model loads)."""
    try:
        source = resolve(spec.data, spec.split, spec.lengths)
    except (SourceError, OSError) as e:
        raise EvalInputError(f"--data {spec.data}: {e}") from e
    if not source.units:
        raise EvalInputError(f"--data {spec.data}: split {spec.split!r} has no rows")
    unit = source.units[0]
    first = next(read_rows(source, unit), None)
    try:
        normalize(first, spec.columns, None if source.hub else Path(unit.path).parent)
    except BadSampleError as e:
        if e.reason == "missing_field":
            raise EvalInputError(f"--data {spec.data}: {e.detail}") from e
    return source


def recordings(spec: EvalSpec, source: Source, on_skip) -> Iterator[list[Record]]:
    """Questions grouped by recording, in source order, without holding audio beyond one recording.

    Consecutive rows about one recording form a group (the published layout repeats a recording's audio in five
    consecutive rows); JSON tables, whose rows are metadata only, are grouped whole. ``on_skip(n, reason)`` counts
    rows that are bad or outside the requested lengths."""
    sspec = StreamSpec(spec.data, spec.split, spec.columns, lengths=spec.lengths)

    def records(unit):
        base = None if source.hub else Path(unit.path).parent
        yield from iter_records(
            sspec, source, read_rows(source, unit), base, lambda e: on_skip(1, e.reason), lambda: on_skip(1, None)
        )

    streamed = (rec for unit in source.units if not unit.random_access for rec in records(unit))
    for _, group in groupby(streamed, key=lambda r: r.recording_id):  # across row-group boundaries too
        yield list(group)
    for unit in source.units:
        if unit.random_access:
            groups: dict[str, list[Record]] = defaultdict(list)
            for rec in records(unit):
                groups[rec.recording_id].append(rec)
            yield from groups.values()


def validate(spec: EvalSpec) -> None:
    """Every setting checked from the spec and the model's ``config.json`` alone: one-line errors before anything
    heavy (``compare.py`` / ``sweep.py`` call it before their first training run)."""
    bad = [m for m in spec.methods if m not in METHODS]
    if bad:
        raise EvalInputError(f"--methods: {bad} not in {', '.join(METHODS)}")
    if spec.scoring not in ("logits", "generate"):
        raise EvalInputError(f"--scoring: {spec.scoring!r} is not logits or generate")
    if spec.lengths is not None and (not spec.lengths or any(not x > 0 for x in spec.lengths)):
        raise EvalInputError(f"--lengths: {spec.lengths} must be positive minutes")
    if not spec.original_audio_seconds > 0:
        raise EvalInputError(f"--original-audio-seconds: {spec.original_audio_seconds} must be > 0")
    try:
        check_model_source(spec.model, "--model")
        for m in spec.methods:
            cfg = rope_config(m, spec, 1)
            if cfg.cutoff_dim:
                cfg.check_head_dim(text_head_dim(spec.model))
    except ValueError as e:
        raise EvalInputError(str(e) if str(e).startswith("--") else f"--methods {m}: {e}") from e


class Evaluator:
    def __init__(self, spec: EvalSpec):
        validate(spec)
        self.spec = spec
        self.adapters = resolve_adapters(spec.adapters)
        self.source = open_source(spec)
        self.grid = StreamSpec(spec.data, spec.split, lengths=spec.lengths).grid(self.source)
        self.bad_rows = 0
        self.processor = load_processor(spec.model)
        model = load_model(spec.model, spec.dtype, spec.attn_implementation)
        if self.adapters:
            model = self._attach_adapters(model)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.option_ids = option_token_ids(self.processor.tokenizer)
        self.tokens = seconds_to_tokens(spec.original_audio_seconds, self.processor.feature_extractor)
        self._warned_methods: set[str] = set()

    def _attach_adapters(self, model):
        from peft import PeftModel

        peft_model = None
        for label, path in self.adapters:
            try:
                if peft_model is None:
                    peft_model = PeftModel.from_pretrained(model, path, adapter_name=label)
                else:
                    peft_model.load_adapter(path, adapter_name=label)
            except (RuntimeError, ValueError, KeyError) as e:
                msg = str(e).strip().splitlines()[0][:200]
                raise EvalInputError(f"--adapter {path}: does not fit model {self.spec.model} ({msg})") from e
        audio_side = [
            n for n, _ in peft_model.named_modules() if "lora_A" in n and ("audio_tower" in n or "projector" in n)
        ]
        if audio_side:  # audio encodings are shared across adapters: valid only for language-model-only LoRA
            raise EvalInputError(f"--adapter: adapts the audio encoder ({audio_side[0]}); only LM LoRA is supported")
        return peft_model

    def _variants(self):
        if not self.adapters:
            yield "base"
            return
        for label, _ in self.adapters:
            self.model.set_adapter(label)
            yield label

    def recordings(self, on_skip=lambda n, reason: None) -> Iterator[list[Record]]:
        """The evaluation's questions grouped by recording, at most ``max_questions`` of them."""
        left = self.spec.max_questions
        for recs in recordings(self.spec, self.source, on_skip):
            if left is not None:
                recs = recs[:left]
                left -= len(recs)
            if recs:
                yield recs
            if left is not None and left <= 0:
                return

    def run(self, progress: bool = True) -> tuple[list[dict], list[dict]]:
        """Returns (per-question predictions, aggregated rows)."""
        spec, preds = self.spec, []
        skipped = 0
        total = self.source.num_rows if spec.max_questions is None else min(spec.max_questions, self.source.num_rows)
        bar = tqdm(total=total, unit="q", desc="evaluate", disable=not progress)

        def on_skip(n: int, reason: str | None) -> None:
            self.bad_rows += n if reason is not None else 0
            bar.update(n)

        for recs in self.recordings(on_skip):
            first = recs[0]
            try:
                wav = load_audio(first.audio, self.processor.feature_extractor.sampling_rate, name=first.id)
            except BadSampleError as e:
                skipped += len(recs)
                bar.write(f"skipping {e}")
                bar.update(len(recs))
                continue
            feats, fmask = featurize(wav, self.processor.feature_extractor)
            n_audio = int(audio_tokens_for_frames(fmask.sum(-1)).sum())
            bucket = nearest_bucket(first.duration, self.grid)
            embeds = encode_audio(self.model, feats, fmask) if spec.scoring == "logits" else None
            for variant in self._variants():
                for method in spec.methods:
                    apply_audio_rope(self.model, rope_config(method, spec, self.tokens))
                    choices = self._score(recs, wav, n_audio, embeds)
                    for rec, (choice, text) in zip(recs, choices, strict=True):
                        preds.append(
                            {
                                "adapter": variant,
                                "method": method,
                                "length": bucket,
                                "id": rec.id,
                                "answer": rec.answer,
                                "prediction": choice,
                                "correct": choice == rec.answer,
                                "unparsable": choice is None,
                                "audio_tokens": n_audio,
                                "reply": text,
                            }
                        )
            bar.update(len(recs))
        bar.close()
        self.skipped_questions = skipped + self.bad_rows
        return preds, aggregate(preds)

    def empty_buckets(self, preds: list[dict]) -> list[str]:
        """Warnings for requested length buckets that received no question (and why, when ``max_questions`` did it)."""
        seen = {p["length"] for p in preds}
        wanted = self.spec.lengths if self.spec.lengths is not None else self.grid
        capped = self.spec.max_questions is not None and len({p["id"] for p in preds}) >= self.spec.max_questions
        why = f"--max-questions {self.spec.max_questions} was reached first" if capped else "no recording is nearest it"
        return [f"the {b:g}-min bucket received no question ({why})" for b in wanted if b not in seen]

    def _score(self, recs: list[Record], wav, n_audio: int, embeds) -> list[tuple[int | None, str]]:
        proc = self.processor
        if self.spec.scoring == "logits":
            parts = [mcqa_prompt_ids(proc, n_audio, r.question, r.options, LOGITS_PREFIX) for r in recs]
            prefix = parts[0][0]
            method = current_config(self.model).method
            if method not in self._warned_methods:
                ids = torch.tensor([prefix])
                if warn_if_beyond_context(self.model, ids, torch.ones_like(ids)):
                    self._warned_methods.add(method)  # once per method is enough
            out = score_questions(self.model, prefix, [p[1] for p in parts], embeds, self.option_ids)
            return [(p.choice, "") for p in out]
        examples = [build_mcqa_example(proc, wav, r.question, r.options, name=r.id) for r in recs]
        batch = MCQACollator(proc.tokenizer.pad_token_id, "left")(examples)
        batch = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        out = predict_generate(self.model, proc.tokenizer, batch)
        return [(p.choice, p.text) for p in out]


def aggregate(preds: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for p in preds:
        groups[(p["adapter"], p["method"], p["length"])].append(p)
    rows = []
    for (adapter, method, length), ps in groups.items():
        rows.append(
            {
                "adapter": adapter,
                "method": method,
                "length_min": length,
                "questions": len(ps),
                "accuracy": sum(p["correct"] for p in ps) / len(ps),
                "unparsable": sum(p["unparsable"] for p in ps),
                "audio_tokens_mean": sum(p["audio_tokens"] for p in ps) / len(ps),
            }
        )
    return rows
