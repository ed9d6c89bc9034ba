"""The LightningModule of VLAT fine-tuning: Qwen2-Audio + LoRA on the language model + an audio RoPE method."""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics.aggregation import SumMetric
from torchmetrics.classification import MulticlassAccuracy

from vlat.audio.compression import AudioCompression
from vlat.audio.decode import seconds_to_tokens
from vlat.data.collate import padded_fraction
from vlat.data.prompts import N_OPTIONS
from vlat.errors import REASONS, ConfigError
from vlat.evaluation.scoring import option_token_ids, predict_logits
from vlat.evaluation.stats import Interval, accuracy_interval
from vlat.models import family_of_processor
from vlat.models.loading import (
    check_model_source,
    load_model,
    load_processor,
    resolve_attn,
    resolve_dtype,
    text_head_dim,
)
from vlat.rope import (
    METHODS,
    AudioRopeConfig,
    apply_audio_compression,
    apply_audio_rope,
    current_config,
    find_audio_model,
    warn_if_beyond_context,
)
from vlat.training.activation_checkpointing import (
    CheckpointPolicy,
    kept_bytes_per_token,
    layer_mask,
    layers_to_checkpoint,
    policy_of,
    set_checkpointed_layers,
)
from vlat.training.checkpointing import adapter_dir_for
from vlat.training.device_memory import GIB, available_bytes
from vlat.training.fused_kernels import FusedKernels, apply_fused_kernels, use_fused_kernels
from vlat.training.fused_kernels import available as fused_kernels_installed
from vlat.training.lm_head import answer_loss
from vlat.training.lora import LoraTargets, prepare_for_training, set_lora_input_casting

log = logging.getLogger("vlat")


class VLATModule(L.LightningModule):
    """LoRA fine-tuning of Qwen2-Audio for long-audio MCQA (arXiv 2510.15231, §5.2, §6; Appendix D.1 defaults).

    Args:
        model_name_or_path: hub id or local checkpoint directory.
        dtype: ``auto`` (bf16 on a bf16-capable GPU, else fp32), ``bfloat16``, ``float16`` or ``float32``.
        attn_implementation: ``auto`` (flash_attention_2 when flash-attn and CUDA are present, else sdpa), ``eager``,
            ``sdpa`` or ``flash_attention_2``.
        lora_targets: ``q`` or ``qkvo`` projections of the language model.
        lora_rank, lora_alpha, lora_dropout: LoRA settings (paper: 8, 16, 0.05).
        rope_method: audio RoPE used in training and validation (``vanilla``, ``partial_pi``, ``partial_yarn``,
            ``whole_pi``, ``whole_yarn``); VLAT needs a partial method.
        original_audio_seconds: the familiar audio window in seconds (30 s = 750 tokens on Qwen2-Audio).
        cutoff_dim, temperature: Partial YaRN settings (only with ``partial_yarn``).
        audio_compression: audio tokens compressed per 30-s window before the language model, LoRA trains on them:
            ``none``, ``pool:K``, ``ltbm:R[:W|:global]`` (:mod:`vlat.audio.compression`); positions stay time-aligned.
        gradient_checkpointing: non-reentrant activation checkpointing as a policy (``auto``: per batch, the fewest
            decoder layers that fit the activation budget, none when the batch fits; ``full``; ``selective``: every
            other layer; ``off``; ``true``/``false`` = full/off). See :mod:`vlat.training.activation_checkpointing`.
        fused_kernels: ``auto`` (Liger-Kernel's fused RMSNorm / SwiGLU / rotary on CUDA when installed, the ``fast``
            extra), ``on`` (required) or ``off``; never on CPU. See :mod:`vlat.training.fused_kernels`.
        activation_memory_gib: the activation budget ``auto`` plans with; default: 90% of the device memory available
            when training starts.
        learning_rate, weight_decay: AdamW settings (paper: 5e-5).
        max_nonfinite_batches: a batch whose loss is not finite is skipped, counted (``nonfinite_loss``) and its
            samples named; this many in a row stop the run (the model has diverged).
    """

    def __init__(
        self,
        model_name_or_path: str = "Qwen/Qwen2-Audio-7B-Instruct",
        dtype: str = "auto",
        attn_implementation: str = "auto",
        lora_targets: LoraTargets = "qkvo",
        lora_rank: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.05,
        rope_method: str = "partial_pi",
        original_audio_seconds: float = 30.0,
        cutoff_dim: int = 0,
        temperature: float = 1.0,
        audio_compression: str = "none",
        gradient_checkpointing: CheckpointPolicy | bool = "auto",
        activation_memory_gib: float | None = None,
        fused_kernels: FusedKernels = "auto",
        learning_rate: float = 5e-5,
        weight_decay: float = 0.0,
        max_nonfinite_batches: int = 3,
    ):
        super().__init__()
        _check_hparams(locals())
        self.save_hyperparameters()
        self.strict_loading = False  # checkpoints hold the LoRA weights only
        self.model = None
        self.processor = None
        self.val_acc = torch.nn.ModuleDict()
        self.val_count = torch.nn.ModuleDict()
        self.train_skips = torch.zeros(len(REASONS))  # training samples skipped by reason, this rank, whole run
        self._train_skips_reported = torch.zeros(len(REASONS))  # all ranks' counts at the last summary
        self.val_skipped: Counter = Counter()  # this validation run, this rank
        self._val_by_recording: dict[float, dict[str, list[int]]] = {}  # bucket -> recording -> [correct, questions]
        self.last_validation: tuple[int, dict] | None = None  # (step, bucket -> Interval), for the run's summary
        self._window_samples = 0  # real samples since the last optimizer step (this rank)
        self._pass_samples = 0  # real samples in the current data pass (this rank)
        self._epoch_samples = 0  # real samples in the current epoch (this rank)
        self._data_pass: int | None = 0  # None: resumed without a record of it (the first batch tells)
        self._resumed_epoch_samples: tuple[int, int] | None = None  # (epoch, samples): a mid-epoch resume goes on
        self._t0 = None
        self._resume_rng = None
        self._nonfinite_run = 0  # consecutive batches with a non-finite loss (this rank)
        self._activation_budget: float | None = None  # bytes, set at the first training batch (auto policy)

    # -- model --------------------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.model is not None:
            return
        hp = self.hparams
        self.processor = load_processor(hp.model_name_or_path)
        model = prepare_for_training(
            load_model(hp.model_name_or_path, hp.dtype, hp.attn_implementation),
            hp.lora_targets,
            hp.lora_rank,
            hp.lora_alpha,
            hp.lora_dropout,
            hp.gradient_checkpointing,
        )
        rope = AudioRopeConfig(
            method=hp.rope_method,
            original_audio_tokens=seconds_to_tokens(
                hp.original_audio_seconds, self.processor.feature_extractor, family_of_processor(self.processor)
            ),
            cutoff_dim=hp.cutoff_dim,
            temperature=hp.temperature,
        )
        self.model = apply_audio_compression(apply_audio_rope(model, rope), hp.audio_compression)
        cuda = self._device_type() == "cuda"
        if use_fused_kernels(hp.fused_kernels, cuda, fused_kernels_installed()):
            apply_fused_kernels(find_audio_model(self.model).language_model)
            rank_zero_info("[vlat] fused kernels (Liger) on the language model: RMSNorm, SwiGLU, rotary")
        self.model.train()  # LoRA dropout active; the frozen audio tower has no dropout (rate 0)
        self.audio_token_id = find_audio_model(model).config.audio_token_id
        self.max_positions = model.config.text_config.max_position_embeddings
        self.option_ids = option_token_ids(self.processor.tokenizer)

    def _device_type(self) -> str:
        trainer = self._trainer
        return (
            trainer.strategy.root_device.type
            if trainer is not None
            else ("cuda" if torch.cuda.is_available() else "cpu")
        )

    def on_fit_start(self) -> None:
        # mixed precision: LoRA computes in the activation dtype (no fp32 copies of its inputs); held for the whole
        # fit, so that checkpoint recomputation in backward takes the same path as the forward
        set_lora_input_casting(self.model, enabled="mixed" not in str(self.trainer.precision))

    def on_train_end(self) -> None:
        """A run ends with what it learned and where it is, not on a progress bar."""
        lines = []
        if self.last_validation is not None:
            step, cells = self.last_validation
            lines.append(f"[vlat] last validation (step {step}), accuracy per length bucket [95% interval]:")
            for bucket, iv in cells.items():
                interval = f"[{100 * iv.low:.1f}–{100 * iv.high:.1f}]" if iv.low is not None else ""
                lines.append(
                    f"[vlat]   {bucket:g} min: {100 * iv.estimate:.1f}% {interval} "
                    f"({iv.questions} questions, {iv.recordings} recordings)"
                )
        for cb in self.trainer.checkpoint_callbacks:
            last = getattr(cb, "last_model_path", "") or getattr(cb, "best_model_path", "")
            if cb.dirpath:
                where = f"last {last}, its PEFT adapter {adapter_dir_for(last)}" if last else "none written"
                lines.append(f"[vlat] checkpoints in {cb.dirpath} ({where})")
        for line in lines:
            rank_zero_info(line)

    def on_fit_end(self) -> None:
        set_lora_input_casting(self.model, enabled=True)

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay)

    # -- training -----------------------------------------------------------------------------------------------
    # -- skip counters: per reason, summed over ranks, training and validation apart ------------------------------
    def _all_ranks(self, counts: torch.Tensor) -> torch.Tensor:
        t = counts.to(self.device, torch.float32, copy=True)  # all_reduce works in place
        if self.trainer.world_size > 1:
            t = self.trainer.strategy.reduce(t, reduce_op="sum")
        return t.cpu()

    def _log_skips(self, prefix: str, totals: torch.Tensor) -> None:
        """``<prefix>/skipped_total`` and ``<prefix>/skipped/<reason>`` (reasons seen so far), all ranks summed."""
        on_step = prefix == "data"
        self.log(f"{prefix}/skipped_total", float(totals.sum()), on_step=on_step, on_epoch=not on_step, batch_size=1)
        for reason, n in zip(REASONS, totals.tolist(), strict=True):
            if n:
                self.log(f"{prefix}/skipped/{reason}", n, on_step=on_step, on_epoch=not on_step, batch_size=1)

    def _summarize_skipped(self, where: str, counts: torch.Tensor) -> None:
        if counts.sum() > 0:
            detail = ", ".join(f"{r}: {int(n)}" for r, n in zip(REASONS, counts.tolist(), strict=True) if n)
            rank_zero_info(f"[vlat] skipped {int(counts.sum())} bad samples in {where} ({detail})")

    def _end_of_pass(self, where: str, samples: int | None = None) -> None:
        """Summarise a data pass's skips (all ranks) and stop if no rank had one usable sample in it."""
        totals = self._all_ranks(self.train_skips)
        self._summarize_skipped(where, totals - self._train_skips_reported)
        self._train_skips_reported = totals
        self._check_pass_had_data(where, samples)

    def _count_skipped(self, batch: dict) -> None:
        """Training batches: a new data pass summarises (and checks) the one before, then this batch's skips count."""
        pass_idx = batch.get("data_pass", self._data_pass)
        if self._data_pass is None:  # resumed from a checkpoint that did not record its pass: adopt this one
            self._data_pass = pass_idx
        if pass_idx != self._data_pass:
            self._end_of_pass(f"data pass {self._data_pass}")
            self._data_pass = pass_idx
        skipped = batch.get("skipped") or {}
        self.train_skips += torch.tensor([float(skipped.get(r, 0)) for r in REASONS])
        self._log_skips("data", self._all_ranks(self.train_skips))

    def _check_pass_had_data(self, where: str, samples: int | None = None) -> None:
        """A whole pass without one usable sample on any rank cannot train: stop instead of spinning."""
        seen = torch.tensor(float(self._pass_samples if samples is None else samples), device=self.device)
        if self.trainer.world_size > 1:
            seen = self.trainer.strategy.reduce(seen, reduce_op="sum")
        if seen.item() == 0:
            raise ConfigError(
                f"data: no usable training sample in {where}: every row was skipped or filtered out (check "
                "data.source, data.train_lengths and data.max_audio_seconds; skip counts are logged above)"
            )
        self._pass_samples = 0

    def on_train_batch_start(self, batch, batch_idx) -> None:
        if self._resume_rng is not None:  # applied here: creating the DataLoader iterator consumes RNG after restore
            torch.set_rng_state(self._resume_rng["torch"])
            if "cuda" in self._resume_rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(self._resume_rng["cuda"])
            self._resume_rng = None
        self._t0 = time.perf_counter()

    def _plan_checkpointing(self, batch: dict) -> None:
        """``auto`` policy: checkpoint the fewest decoder layers that fit this batch in the activation budget."""
        if policy_of(self.hparams.gradient_checkpointing) != "auto":
            return
        layers = find_audio_model(self.model).language_model.layers
        if self._activation_budget is None:
            gib = self.hparams.activation_memory_gib
            self._activation_budget = gib * GIB if gib is not None else 0.9 * available_bytes(self.device)
        mixed = "mixed" in str(getattr(self.trainer, "precision", ""))
        nbytes = 2 if mixed else layers[0].input_layernorm.weight.element_size()
        off, on = kept_bytes_per_token(self.model.config.text_config, nbytes)
        k = layers_to_checkpoint("auto", len(layers), batch["input_ids"].numel(), off, on, self._activation_budget)
        set_checkpointed_layers(layers, layer_mask(k, len(layers)))
        self.log("train/checkpointed_layers", float(k), on_step=True, batch_size=1)

    def training_step(self, batch: dict, batch_idx: int):
        self._count_skipped(batch)
        if batch.get("n", 0) == 0:
            self._nonfinite(batch, None)  # collectives: every rank, every step
            return self._no_update()
        self._plan_checkpointing(batch)
        # without a virtual span no position exceeds the sequence length: check (with a sync) only when it could
        # pass the limit; VLAT's long virtual spans are by design
        if batch["input_ids"].shape[1] > self.max_positions and current_config(self.model).virtual_audio_tokens is None:
            warn_if_beyond_context(self.model, batch["input_ids"], batch["attention_mask"])
        loss = answer_loss(self.model, batch)  # logits at the answer tokens only, not all T x vocab
        if self._nonfinite(batch, loss):
            return self._no_update()
        self._window_samples += batch["n"]
        self._pass_samples += batch["n"]
        self._epoch_samples += batch["n"]
        bsz = batch["n"]
        self.log("train/loss", loss, on_step=True, prog_bar=True, batch_size=bsz)
        self.log("train/padded_fraction", padded_fraction(batch["attention_mask"]), on_step=True, batch_size=bsz)
        self._audio_tokens = int((batch["input_ids"] == self.audio_token_id).sum())
        return loss

    def _nonfinite(self, batch: dict, loss: torch.Tensor | None) -> bool:
        """A batch whose loss is not finite is skipped and counted, its samples named; ``max_nonfinite_batches`` in a
        row on any rank stop every rank (the model has diverged). Every rank calls this at every step (``loss`` None
        for an empty batch): the stop decision is a collective."""
        finite = loss is None or bool(torch.isfinite(loss))
        if loss is not None:
            self._nonfinite_run = 0 if finite else self._nonfinite_run + 1
        stop = torch.tensor(float(self._nonfinite_run >= self.hparams.max_nonfinite_batches), device=self.device)
        if self.trainer.world_size > 1:
            stop = self.trainer.strategy.reduce(stop, reduce_op="sum")
        where = ""
        if not finite:
            ids = ", ".join(map(str, batch.get("id", [])[:8]))
            where = f"non-finite training loss ({loss.item()}) at global step {self.global_step} (samples: {ids})"
        if stop.item() > 0:
            raise FloatingPointError(
                f"{where or 'non-finite training loss on another rank'}, "
                f"{self.hparams.max_nonfinite_batches} batches in a row: stopping; checkpoints already written are "
                "intact (lower the learning rate, or check these samples' audio)"
            )
        if not finite:
            log.warning(f"[vlat] rank {self.global_rank}: skipping a batch with a {where}")
            self.train_skips[REASONS.index("nonfinite_loss")] += batch["n"]
        return not finite

    def _no_update(self):
        """Nothing to learn from this batch: under DDP every rank must still run backward (a zero loss reaching every
        trainable weight keeps the gradient all-reduce in step; the update is skipped when no rank had data)."""
        if self.trainer.world_size == 1:
            return None
        return sum((p * 0).sum() for p in self.parameters() if p.requires_grad)

    def on_before_optimizer_step(self, optimizer) -> None:
        seen = torch.tensor(float(self._window_samples), device=self.device)
        if self.trainer.world_size > 1:
            seen = self.trainer.strategy.reduce(seen, reduce_op="sum")
        self._window_samples = 0
        if seen.item() == 0:  # only padding / all-bad batches on every rank: no update (AdamW skips grad=None)
            for p in self.parameters():
                p.grad = None
            return
        # a non-finite gradient must never reach the weights (checkpoints only ever hold finite LoRA weights);
        # one fused check per step, names looked up only on failure
        named = [(n, p.grad) for n, p in self.named_parameters() if p.grad is not None]
        if named and not torch.isfinite(torch.nn.utils.get_total_norm([g for _, g in named])):
            bad = next(n for n, g in named if not torch.isfinite(g).all())
            raise FloatingPointError(
                f"non-finite gradient in {bad} at global step {self.global_step}: stopping before the update; "
                "checkpoints already written are intact"
            )

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self._t0 is not None and batch.get("n", 0):
            elapsed = time.perf_counter() - self._t0
            self.log("train/audio_tokens_per_s", self._audio_tokens / max(elapsed, 1e-9), on_step=True, batch_size=1)

    def on_train_epoch_start(self) -> None:
        resumed, self._resumed_epoch_samples = self._resumed_epoch_samples, None
        self._epoch_samples = resumed[1] if resumed and resumed[0] == self.current_epoch else 0

    def on_train_epoch_end(self) -> None:
        self._end_of_pass(f"epoch {self.current_epoch}", self._epoch_samples)

    # -- validation: logits scoring, accuracy per duration bucket --------------------------------------------------
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.val_skipped.update(batch.get("skipped") or {})
        for bucket in batch.get("buckets", ()):  # every rank creates the same metrics (they sync at epoch end)
            key = _bucket_key(bucket)
            if key not in self.val_acc:
                self.val_acc[key] = MulticlassAccuracy(num_classes=N_OPTIONS, average="micro").to(self.device)
                self.val_count[key] = SumMetric().to(self.device)
        if batch.get("n", 0) == 0:
            return
        preds = predict_logits(self.model, batch, self.option_ids)
        for pred, answer, bucket, rec in zip(
            preds, batch["answer"], batch["bucket"], batch["recording_id"], strict=True
        ):
            counts = self._val_by_recording.setdefault(bucket, {}).setdefault(rec, [0, 0])  # the summary's interval
            counts[0] += int(pred.choice == answer)
            counts[1] += 1
            key = _bucket_key(bucket)
            self.val_acc[key].update(
                torch.tensor([pred.choice], device=self.device), torch.tensor([answer], device=self.device)
            )
            self.val_count[key].update(1.0)

    def _validation_summary(self) -> dict[float, Interval]:
        """This validation run's accuracy per length bucket with its 95% interval (all ranks' recordings)."""
        mine = {b: dict(recs) for b, recs in self._val_by_recording.items()}
        self._val_by_recording.clear()
        parts = [mine]
        if self.trainer.world_size > 1 and torch.distributed.is_initialized():
            parts = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(parts, mine)
        merged: dict[float, dict[str, list[int]]] = defaultdict(dict)
        for part in parts:
            for bucket, recs in part.items():
                for rec, (c, n) in recs.items():
                    old = merged[bucket].get(rec, [0, 0])
                    merged[bucket][rec] = [old[0] + c, old[1] + n]
        return {
            b: accuracy_interval([c for c, _ in recs.values()], [n for _, n in recs.values()])
            for b, recs in sorted(merged.items())
        }

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.last_validation = (self.global_step, self._validation_summary())
        self._val_by_recording.clear()
        for key, metric in self.val_acc.items():
            if self.val_count[key].compute() > 0:  # buckets with no question are not logged as 0% (synced count)
                self.log(f"val/acc_{key}", metric.compute())
            metric.reset()
            self.val_count[key].reset()
        totals = self._all_ranks(torch.tensor([float(self.val_skipped.get(r, 0)) for r in REASONS]))
        self._log_skips("val", totals)
        self._summarize_skipped("validation", totals)
        self.val_skipped.clear()

    # -- checkpoints: LoRA weights + RNG only ---------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        checkpoint["vlat_rng"] = {"torch": torch.get_rng_state()}
        checkpoint["vlat_train_skips"] = self._all_ranks(self.train_skips)  # the run's totals go on with it
        # the data pass in progress and its usable samples so far (all ranks), so that a resume past the first pass
        # closes passes as an uninterrupted run would (and the empty-pass check counts the samples seen before)
        seen = self._all_ranks(torch.tensor([float(self._pass_samples), float(self._epoch_samples)]))
        checkpoint["vlat_data_pass"] = {
            "pass": self._data_pass,
            "pass_samples": int(seen[0]),
            "epoch": self.current_epoch,
            "epoch_samples": int(seen[1]),
        }
        if torch.cuda.is_available():
            checkpoint["vlat_rng"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._resume_rng = checkpoint.get("vlat_rng")  # dropout masks continue exactly (see on_train_batch_start)
        if "vlat_train_skips" in checkpoint and self.global_rank == 0:  # summed over ranks: kept by one
            self.train_skips = checkpoint["vlat_train_skips"].clone().float()
            self._train_skips_reported = self.train_skips.clone()
        passed = checkpoint.get("vlat_data_pass")
        self._data_pass = passed["pass"] if passed else None
        if passed and self.global_rank == 0:  # summed over ranks: kept by one
            self._pass_samples = passed["pass_samples"]
            self._resumed_epoch_samples = (passed["epoch"], passed["epoch_samples"])


def _check_hparams(hp: dict) -> None:
    """Every setting checked before the model loads (the config alone; ``cutoff_dim`` against the model's
    ``config.json``): one-line :class:`ConfigError` naming the field."""
    checks = [
        ("lora_rank", isinstance(hp["lora_rank"], int) and hp["lora_rank"] >= 1, "an integer >= 1"),
        ("lora_alpha", hp["lora_alpha"] > 0, "> 0"),
        ("lora_dropout", 0.0 <= hp["lora_dropout"] < 1.0, "in [0, 1)"),
        ("learning_rate", hp["learning_rate"] > 0, "> 0"),
        ("weight_decay", hp["weight_decay"] >= 0, ">= 0"),
        ("original_audio_seconds", hp["original_audio_seconds"] > 0, "> 0"),
        ("lora_targets", hp["lora_targets"] in ("q", "qkvo"), "q or qkvo"),
    ]
    for name, ok, want in checks:
        if not ok:
            raise ConfigError(f"model.{name}: {hp[name]!r} must be {want}")
    if hp["rope_method"] not in METHODS:
        raise ConfigError(f"model.rope_method: {hp['rope_method']!r} is not one of {', '.join(METHODS)}")
    resolve_dtype(hp["dtype"])
    try:
        AudioCompression.parse(hp["audio_compression"])
        policy_of(hp["gradient_checkpointing"])
    except ValueError as e:
        raise ConfigError(f"model.{e}") from None
    use_fused_kernels(hp["fused_kernels"], torch.cuda.is_available(), fused_kernels_installed())
    gib = hp["activation_memory_gib"]
    if gib is not None and not gib > 0:
        raise ConfigError(f"model.activation_memory_gib: {gib!r} must be > 0 (or null: measured)")
    if hp["attn_implementation"] not in ("auto", "eager", "sdpa", "flash_attention_2"):
        resolve_attn(hp["attn_implementation"])
    check_model_source(hp["model_name_or_path"], "model.model_name_or_path")
    try:
        cfg = AudioRopeConfig(  # method x cutoff_dim x temperature rules (Partial YaRN, §4)
            hp["rope_method"], original_audio_tokens=1, cutoff_dim=hp["cutoff_dim"], temperature=hp["temperature"]
        )
        if cfg.cutoff_dim:
            cfg.check_head_dim(text_head_dim(hp["model_name_or_path"]))
    except ConfigError as e:
        raise ConfigError(f"model.{e}") from None


def _bucket_key(minutes: float) -> str:
    return f"{minutes:g}min".replace(".", "_")
