"""Evaluation over adapters x RoPE methods x length buckets (the paper's Tables 1, 2, 4, 6)."""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vlat.audio.compression import AudioCompression
from vlat.audio.decode import load_audio, seconds_to_tokens
from vlat.audio.tokens import time_layout
from vlat.data.buckets import DEFAULT_TOLERANCE
from vlat.data.prompts import encode_waveform, mcqa_prompt_ids
from vlat.data.records import ColumnMapping, Record, normalize
from vlat.data.sources import Source, SourceError, read_rows, resolve
from vlat.data.stream import StreamSpec, iter_records
from vlat.errors import BadSampleError, ConfigError
from vlat.evaluation.memory import recording_need
from vlat.evaluation.prefix import (
    DEFAULT_PREFILL_CHUNK,
    encode_audio,
    generate_answers,
    reserved_tokens,
    score_questions,
)
from vlat.evaluation.scoring import LOGITS_PREFIX, option_token_ids
from vlat.evaluation.tables import aggregate
from vlat.models import family_of_processor
from vlat.models.loading import check_model_source, load_model, load_processor, text_head_dim
from vlat.rope import (
    METHODS,
    AudioRopeConfig,
    apply_audio_compression,
    apply_audio_rope,
    find_audio_model,
    warn_if_beyond_context,
)
from vlat.training.adapter_record import base_fingerprint, fingerprint_mismatch, name_mismatch, training_of
from vlat.training.checkpointing import UnsafeCheckpointError, adapter_dir_for, adapter_files
from vlat.training.device_memory import available_bytes, size

SKIPS_SHOWN = 20  # skipped questions named on the terminal (all of them are in results.json)


class EvalInputError(ConfigError):
    """Bad evaluation input (missing adapter, wrong base model, unusable dataset): reported in one line."""


@dataclass
class EvalSpec:
    model: str
    data: str
    adapters: list[str] = field(default_factory=list)  # DIR, .ckpt, or LABEL=PATH
    split: str = "test"
    methods: list[str] = field(default_factory=lambda: ["vanilla", "partial_pi"])
    compressions: list[str] = field(default_factory=lambda: ["none"])  # vlat.audio.compression settings
    original_audio_seconds: float = 30.0
    cutoff_dim: int = 0
    temperature: float = 1.0
    lengths: list[float] | None = None  # None: every length the data has (its folders, else the standard ones)
    length_tolerance: float = DEFAULT_TOLERANCE  # without folders: within this share of L is bucket L
    scoring: str = "logits"
    max_new_tokens: int = 24  # generate scoring
    prefill_chunk: int = DEFAULT_PREFILL_CHUNK  # tokens per prefill forward; 0 = the whole prefix at once
    max_questions: int | None = None
    max_audio_seconds: float | None = 900.0  # longer recordings are skipped from their header, as in training
    allow_other_base: bool = False  # evaluate adapters trained on another base model (deliberately)
    compare: list[str] | None = None  # paired comparisons "A:B" (None: every method against vanilla)
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
    except UnsafeCheckpointError as e:
        raise EvalInputError(f"--adapter {e}") from None
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


def recordings(
    spec: EvalSpec, source: Source, on_bad=lambda e: None, on_filtered=lambda rec: None
) -> Iterator[list[Record]]:
    """Questions grouped by recording, in source order, without holding audio beyond one recording.

    Consecutive rows about one recording form a group (the published layout repeats a recording's audio in five
    consecutive rows); JSON tables, whose rows are metadata only, are grouped whole. ``on_bad(error)`` gets each
    row that is bad or over ``max_audio_seconds`` (its header tells: nothing is decoded), ``on_filtered()`` each
    row outside the requested lengths."""
    sspec = StreamSpec(
        spec.data, spec.split, spec.columns, lengths=spec.lengths, length_tolerance=spec.length_tolerance
    )

    def records(unit):
        rows = read_rows(source, unit)
        yield from iter_records(sspec, source, unit, rows, on_bad, on_filtered, spec.max_audio_seconds)

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
    if spec.max_questions is not None and not (isinstance(spec.max_questions, int) and spec.max_questions >= 1):
        raise EvalInputError(f"--max-questions: {spec.max_questions!r} must be an integer >= 1 (or unset: all)")
    if spec.max_audio_seconds is not None and not spec.max_audio_seconds > 0:
        raise EvalInputError(f"--max-audio-seconds: {spec.max_audio_seconds} must be > 0 (inf: no limit)")
    if not 0 <= spec.length_tolerance < 1:
        raise EvalInputError(f"--length-tolerance: {spec.length_tolerance} must be in [0, 1)")
    if not (isinstance(spec.max_new_tokens, int) and spec.max_new_tokens >= 1):
        raise EvalInputError(f"--max-new-tokens: {spec.max_new_tokens!r} must be an integer >= 1")
    if not (isinstance(spec.prefill_chunk, int) and spec.prefill_chunk >= 0):
        raise EvalInputError(f"--prefill-chunk: {spec.prefill_chunk!r} must be an integer >= 0 (0 = no chunking)")
    if not spec.original_audio_seconds > 0:
        raise EvalInputError(f"--original-audio-seconds: {spec.original_audio_seconds} must be > 0")
    try:
        settings = [str(AudioCompression.parse(c)) for c in spec.compressions]
    except ConfigError as e:
        raise EvalInputError("--audio-compression" + str(e).removeprefix("audio_compression")) from None
    if not settings or len(set(settings)) != len(settings):
        raise EvalInputError(f"--audio-compression: {spec.compressions} must name distinct settings")
    try:
        check_model_source(spec.model, "--model")
        for m in spec.methods:
            cfg = rope_config(m, spec, 1)
            if cfg.cutoff_dim:
                cfg.check_head_dim(text_head_dim(spec.model))
    except ValueError as e:
        raise EvalInputError(str(e) if str(e).startswith("--") else f"--methods {m}: {e}") from e


def resolve_pairs(spec: EvalSpec, adapter_labels: list[str]) -> list[tuple[str, str]]:
    """``--compare A:B,...``: two methods, two compression settings (``pool:2:none``) or two adapter labels, each
    pair scored on the same questions; by default every method against vanilla."""
    if spec.compare is None:
        return [(m, "vanilla") for m in spec.methods if m != "vanilla"] if "vanilla" in spec.methods else []
    known = {
        "methods": list(spec.methods),
        "audio compression settings": [str(AudioCompression.parse(c)) for c in spec.compressions],
        "adapter labels": adapter_labels,
    }
    pairs = []
    for entry in spec.compare:
        cuts = [i for i, ch in enumerate(entry) if ch == ":"]
        found = [
            (entry[:i], entry[i + 1 :])
            for i in cuts
            if entry[:i] != entry[i + 1 :] and any(entry[:i] in v and entry[i + 1 :] in v for v in known.values())
        ]
        if not found:
            choices = "; ".join(f"{k}: {', '.join(v)}" for k, v in known.items())
            raise EvalInputError(f"--compare {entry}: expected A:B, two different values of one of ({choices})")
        pairs.append(found[0])
    return pairs


def compression_mismatches(training: dict[str, dict | None], compressions: list[str]) -> list[str]:
    """Warnings for adapters evaluated under an audio compression they were not trained with (from their records)."""
    out = []
    for label, settings in training.items():
        if not settings or "audio_compression" not in settings:
            continue
        trained = str(AudioCompression.parse(settings["audio_compression"]))
        for c in compressions:
            if str(AudioCompression.parse(c)) != trained:
                out.append(f"adapter {label} was trained with audio compression {trained}, evaluated here under {c}")
    return out


class Evaluator:
    def __init__(self, spec: EvalSpec):
        validate(spec)
        self.spec = spec
        self.adapters = resolve_adapters(spec.adapters)
        self.pairs = resolve_pairs(spec, [label for label, _ in self.adapters] or ["base"])
        for _, path in self.adapters:
            self._check_base(path, name_mismatch(path, spec.model))
        self.adapter_training = {label: training_of(path) for label, path in self.adapters}  # None: not recorded
        self.training_warnings = compression_mismatches(self.adapter_training, spec.compressions)
        self.source = open_source(spec)
        sspec = StreamSpec(spec.data, spec.split, lengths=spec.lengths, length_tolerance=spec.length_tolerance)
        self.buckets = sspec.buckets(self.source)
        self.left_out: Counter = Counter()  # questions in no requested bucket, by recording duration (last run)
        self.skipped: list[dict] = []  # every question not scored for a bad input: id, reason, detail (last run)
        self.processor = load_processor(spec.model)
        model = load_model(spec.model, spec.dtype, spec.attn_implementation)
        fingerprint = base_fingerprint(model)
        for _, path in self.adapters:  # before scoring: an adapter of a same-shaped other model loads without error
            self._check_base(path, fingerprint_mismatch(path, fingerprint))
        if self.adapters:
            model = self._attach_adapters(model)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.option_ids = option_token_ids(self.processor.tokenizer)
        self.audio_token_id = find_audio_model(self.model).config.audio_token_id
        self.tokens = seconds_to_tokens(
            spec.original_audio_seconds, self.processor.feature_extractor, family_of_processor(self.processor)
        )
        self.compressions = [AudioCompression.parse(c) for c in spec.compressions]
        self._warned_methods: set[str] = set()
        self.memory_skipped: dict[float, int] = {}  # bucket -> questions skipped for memory (last run)
        self.memory_messages: list[str] = []  # one line per such bucket

    def _check_base(self, path: Path, problem: str | None) -> None:
        if problem and not self.spec.allow_other_base:
            raise EvalInputError(
                f"--adapter {path}: {problem} (add --allow-other-base to evaluate it on this model deliberately)"
            )

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

    def recordings(self, on_bad=lambda e: None, on_filtered=lambda rec: None) -> Iterator[list[Record]]:
        """The evaluation's questions grouped by recording, at most ``max_questions`` of them."""
        left = self.spec.max_questions
        for recs in recordings(self.spec, self.source, on_bad, on_filtered):
            if left is not None:
                recs = recs[:left]
                left -= len(recs)
            if recs:
                yield recs
            if left is not None and left <= 0:
                return

    def run(self, progress: bool = True) -> tuple[list[dict], list[dict]]:
        """Returns (per-question predictions, aggregated rows). A length bucket that does not fit in the device's
        memory is skipped whole, said in one line (``memory_skipped``); the other buckets go on."""
        spec, preds = self.spec, []
        self.skipped.clear()
        self.left_out.clear()
        self.memory_skipped.clear()
        self.memory_messages.clear()
        total = self.source.num_rows if spec.max_questions is None else min(spec.max_questions, self.source.num_rows)
        bar = tqdm(total=total, unit="q", desc="evaluate", disable=not progress)

        def on_bad(e: BadSampleError) -> None:
            self._skip(e, bar)
            bar.update(1)

        def on_filtered(rec: Record) -> None:
            self.left_out[round(rec.duration, 1)] += 1
            bar.update(1)

        for recs in self.recordings(on_bad, on_filtered):
            preds += self._evaluate(recs, bar)
            bar.update(len(recs))
        bar.close()
        return preds, aggregate(preds)

    def _skip(self, e: BadSampleError, bar, questions: list[Record] | None = None) -> None:
        """Name a skipped question (each of ``questions``, when a recording's audio failed) with its reason."""
        for sample in [r.id for r in questions] if questions else [e.sample]:
            self.skipped.append({"id": sample, "reason": e.reason, "detail": e.detail})
        if len(self.skipped) <= SKIPS_SHOWN:
            bar.write(f"evaluate: skipping {e.sample}: {e.reason}: {e.detail}", file=sys.stderr)

    @property
    def skipped_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(s["reason"] for s in self.skipped).items()))

    def _evaluate(self, recs: list[Record], bar) -> list[dict]:
        """One recording's predictions; none when its audio is unreadable or its bucket does not fit in memory."""
        first = recs[0]
        bucket = first.bucket
        if bucket in self.memory_skipped:
            self.memory_skipped[bucket] += len(recs)
            return []
        try:
            wav = load_audio(first.audio, self.processor.feature_extractor.sampling_rate, name=first.id)
        except BadSampleError as e:
            self._skip(e, bar, recs)
            return []
        enc = encode_waveform(self.processor, wav)
        feats, fmask = enc.features, enc.feature_mask
        settings = []  # per compression: its prompt (the audio run holds its token count)
        for comp in self.compressions:
            n_audio = enc.tokens(comp)
            settings.append((comp, n_audio, *self._prompt(recs, n_audio)))
        need = max(
            (
                self.memory_need(len(prefix), [len(s) for s in suffixes], len(feats))
                for *_, prefix, suffixes in settings
            ),
            key=lambda n: n.total,
        )
        free = available_bytes(self.device)
        if need.total > free:
            self._skip_bucket(bucket, len(recs), f"needs {need.describe()}, {size(free)} free", bar)
            return []
        try:
            return self._recording(recs, settings, feats, fmask, bucket)
        except torch.OutOfMemoryError as e:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            msg = str(e).strip().splitlines()[0][:160]
            self._skip_bucket(bucket, len(recs), f"ran out of memory ({msg}; planned {need.describe()})", bar)
            return []

    def memory_need(self, prefix_tokens: int, suffix_tokens: list[int], windows: int):
        """What one recording needs beyond the weights (:mod:`vlat.evaluation.memory`)."""
        per_question = [n + (self.spec.max_new_tokens if self.spec.scoring == "generate" else 0) for n in suffix_tokens]
        lm = find_audio_model(self.model).language_model
        return recording_need(
            find_audio_model(self.model).config,
            lm.embed_tokens.weight.element_size(),
            prefix_tokens,
            reserved_tokens(self.model, per_question),
            self.spec.prefill_chunk,
            windows,
            lm.config._attn_implementation,
        )

    def _skip_bucket(self, bucket: float, questions: int, why: str, bar) -> None:
        message = f"the {bucket:g}-min bucket {why} on {self.device}: its questions are skipped, other buckets go on"
        self.memory_skipped[bucket] = self.memory_skipped.get(bucket, 0) + questions
        self.memory_messages.append(message)
        bar.write(f"evaluate: {message}")

    def _prompt(self, recs: list[Record], n_audio: int) -> tuple[list[int], list[list[int]]]:
        """The recording's shared prefix and each question's suffix (logits scoring ends them in ``(``)."""
        opener = LOGITS_PREFIX if self.spec.scoring == "logits" else ""
        parts = [mcqa_prompt_ids(self.processor, n_audio, r.question, r.options, opener) for r in recs]
        return parts[0][0], [p[1] for p in parts]

    def _recording(self, recs, settings, feats, fmask, bucket: float) -> list[dict]:
        """Every (compression, adapter, method) prediction of one recording's questions; all or none (an error loses
        none). The audio is encoded once per compression setting, for every adapter and method."""
        out = []
        for comp, n_audio, prefix, suffixes in settings:
            apply_audio_compression(self.model, comp)
            audio = encode_audio(self.model, feats, fmask)
            out += self._setting(recs, prefix, suffixes, audio, n_audio, bucket)
        return out

    def _setting(self, recs, prefix, suffixes, audio, n_audio: int, bucket: float) -> list[dict]:
        spec, out = self.spec, []
        ids = torch.tensor([prefix])
        times = time_layout(ids == self.audio_token_id, audio) if audio.compression.active else None
        for variant in self._variants():
            for method in spec.methods:
                apply_audio_rope(self.model, rope_config(method, spec, self.tokens))
                if method not in self._warned_methods:
                    if warn_if_beyond_context(self.model, ids, torch.ones_like(ids), times):
                        self._warned_methods.add(method)  # once per method is enough
                if spec.scoring == "logits":
                    answers = score_questions(
                        self.model, prefix, suffixes, audio, self.option_ids, prefill_chunk=spec.prefill_chunk
                    )
                else:
                    answers = generate_answers(
                        self.model,
                        self.processor.tokenizer,
                        prefix,
                        suffixes,
                        audio,
                        max_new_tokens=spec.max_new_tokens,
                        prefill_chunk=spec.prefill_chunk,
                    )
                for rec, answer in zip(recs, answers, strict=True):
                    out.append(
                        {
                            "adapter": variant,
                            "compression": str(audio.compression),
                            "method": method,
                            "length": bucket,
                            "id": rec.id,
                            "recording": rec.recording_id,
                            "category": rec.category,
                            "duration_s": rec.duration,
                            "answer": rec.answer,
                            "prediction": answer.choice,
                            "correct": answer.choice == rec.answer,
                            "unparsable": answer.choice is None,
                            "audio_tokens": n_audio,
                            "reply": answer.text,
                        }
                    )
        return out

    def empty_buckets(self, preds: list[dict]) -> list[str]:
        """Warnings for requested length buckets that received no question (and why, when ``max_questions`` did it)."""
        seen = {p["length"] for p in preds}
        capped = self.spec.max_questions is not None and len({p["id"] for p in preds}) >= self.spec.max_questions
        if capped:
            why = f"--max-questions {self.spec.max_questions} was reached first"
        elif self.source.folder_lengths:
            why = "the data has no clip-length folder of that length"
        else:
            why = f"no recording is within {100 * self.spec.length_tolerance:g}% of that length"
        wanted = self.buckets
        said = seen | set(self.memory_skipped)  # memory-skipped buckets have their own line
        return [f"the {b:g}-min bucket received no question ({why})" for b in wanted if b not in said]
