"""What a saved adapter records about the base model it was trained on, and the check that it is used on that model.

A LoRA adapter's shapes fit every base model of the same architecture and sizes, so loading it on another one works
and scores plausibly. Every adapter vlat saves (``<name>-adapter/`` and the copy inside a ``.ckpt``) carries
``vlat_adapter.json``: the base model's name and a fingerprint of its weights (a hash of the first rows of its input
embeddings, rounded to bf16 so that fp32 and bf16 loads agree), and how it was trained (``training``: the audio RoPE
method, original window, cutoff, temperature, audio compression and VLAT strategy). Before scoring, an adapter with
a record is checked against the loaded model's fingerprint; one without (a plain PEFT adapter, or one saved before
records existed) by the ``base_model_name_or_path`` of its ``adapter_config.json``, before the model loads.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

RECORD = "vlat_adapter.json"
_ROWS = 16  # embedding rows hashed: random per model, identical however the checkpoint is stored or loaded


def base_fingerprint(model) -> str:
    """A short hash of the base model's weights (its input embeddings' first rows, rounded to bf16)."""
    rows = model.get_input_embeddings().weight[:_ROWS].detach()
    data = rows.to("cpu", torch.bfloat16).float().contiguous().numpy().tobytes()
    return hashlib.sha256(data + str(tuple(rows.shape)).encode()).hexdigest()[:16]


def write_record(adapter_dir: str | Path, base_model: str, model, training: dict | None = None) -> None:
    """Record the base model (and, when given, the training settings) beside a saved adapter."""
    record = {"base_model": str(base_model), "base_fingerprint": base_fingerprint(model)}
    if training is not None:
        record["training"] = training
    (Path(adapter_dir) / RECORD).write_text(json.dumps(record, indent=1) + "\n")


TRAINING_FIELDS = ("rope_method", "original_audio_seconds", "cutoff_dim", "temperature", "audio_compression")


def training_settings(hparams, vlat_callback=None) -> dict:
    """What an adapter was trained with: the model's audio settings, and VLAT's strategy (None: no VLAT)."""
    settings = {k: hparams[k] for k in TRAINING_FIELDS if k in hparams}
    settings["vlat"] = (
        None
        if vlat_callback is None
        else {
            "strategy": vlat_callback.strategy,
            "per_sample": vlat_callback.per_sample,
            "factors": len(vlat_callback.factors),
        }
    )
    return settings


def training_of(adapter_dir: str | Path) -> dict | None:
    """The recorded training settings of an adapter; None for adapters saved without them."""
    record = read_record(adapter_dir)
    return None if record is None else record.get("training")


def read_record(adapter_dir: str | Path) -> dict | None:
    path = Path(adapter_dir) / RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def _same_name(recorded: str, model: str) -> bool:
    """Whether a recorded base model name denotes ``model``: the same string or local directory, or a hub id and a
    local copy of it (same last path component)."""
    if recorded == model:
        return True
    a, b = Path(recorded).expanduser(), Path(model).expanduser()
    if a.exists() and b.exists():
        return a.resolve() == b.resolve()
    return a.name == b.name


def name_mismatch(adapter_dir: str | Path, model: str) -> str | None:
    """For an adapter without a vlat record: why its ``adapter_config.json`` names another base model (None when it
    names this one, or none)."""
    if read_record(adapter_dir) is not None:
        return None  # checked by fingerprint once the model is loaded
    config = Path(adapter_dir) / "adapter_config.json"
    recorded = json.loads(config.read_text()).get("base_model_name_or_path") if config.is_file() else None
    if recorded and not _same_name(recorded, model):
        return f"was trained on base model {recorded}, not {model}"
    return None


def fingerprint_mismatch(adapter_dir: str | Path, fingerprint: str) -> str | None:
    """For an adapter with a vlat record: why the loaded base model is not the one it was trained on (None when it
    is, or when there is no record)."""
    record = read_record(adapter_dir)
    if record is None or record.get("base_fingerprint") in (None, fingerprint):
        return None
    return f"was trained on base model {record.get('base_model')} whose weights differ from the loaded model's"
