"""What a saved adapter records about the base model it was trained on, and the check that it is used on that model.

A LoRA adapter's shapes fit every base model of the same architecture and sizes, so loading it on another one works
and scores plausibly. Every adapter vlat saves (``<name>-adapter/`` and the copy inside a ``.ckpt``) carries
``vlat_adapter.json``: the base model's name and a fingerprint of its weights (a hash of the first rows of its input
embeddings, rounded to bf16 so that fp32 and bf16 loads agree). Before scoring, an adapter with a record is checked
against the loaded model's fingerprint; one without (a plain PEFT adapter) by the ``base_model_name_or_path`` of its
``adapter_config.json``, before the model loads.
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


def write_record(adapter_dir: str | Path, base_model: str, model) -> None:
    """Record the base model beside a saved adapter."""
    record = {"base_model": str(base_model), "base_fingerprint": base_fingerprint(model)}
    (Path(adapter_dir) / RECORD).write_text(json.dumps(record, indent=1) + "\n")


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
