"""Checkpoints that cannot be lost or half-written, each with the LoRA adapter it was saved with.

- Every ``.ckpt`` is written to a hidden temporary file beside it and renamed into place (never a copy over the old
  file, whatever filesystem ``$TMPDIR`` is on): an interrupted save or a full disk leaves the previous checkpoint.
- Each checkpoint carries its adapter's files (``vlat_adapter``); ``<name>-adapter/`` beside it is the same adapter
  in PEFT format for ``PeftModel.from_pretrained``, with the base model it was trained on recorded
  (:mod:`vlat.training.adapter_record`). ``evaluate.py --adapter X.ckpt`` loads the bytes inside
  ``X.ckpt``, so it always evaluates the weights saved with that checkpoint.
- ``--ckpt_path last`` resumes from the newest complete checkpoint (:func:`newest_checkpoint`).
- An unwritable checkpoint directory is an error at setup, before the model loads.
- No checkpoint file runs code when read: every read (resume, ``--ckpt_path last``'s scan, ``evaluate.py --adapter
  X.ckpt``) uses ``torch.load(weights_only=True)``, which rebuilds tensors, containers and primitives only. A file
  that needs anything else is refused in one line naming it (:class:`UnsafeCheckpointError`).
"""

from __future__ import annotations

import logging
import pickle
import re
import shutil
from pathlib import Path

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from vlat.io import TMP_SUFFIX, check_output_dir, make_staging_dir, publish_dir, write_file_atomic
from vlat.training.adapter_record import training_settings, write_record

log = logging.getLogger("vlat")
ADAPTER_KEY = "vlat_adapter"  # {file name: bytes} of the PEFT adapter saved with the checkpoint


def adapter_dir_for(ckpt_path: str | Path) -> Path:
    """``epoch=0-step=10.ckpt`` -> ``epoch=0-step=10-adapter/``."""
    p = Path(ckpt_path)
    return p.with_name(p.stem + "-adapter")


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint that could only be read by unpickling arbitrary objects (which can run code): refused."""

    def __init__(self, path, error: pickle.UnpicklingError):
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        self.path, self.found = path, found.group(1) if found else None
        what = f" ({self.found})" if self.found else ""
        super().__init__(
            f"{path}: refused: reading it would build objects that are not tensors or plain data{what}; vlat reads "
            "checkpoints with torch.load(weights_only=True) so that no checkpoint file can run code"
        )


def safe_load(path: str | Path, **kwargs):
    """``torch.load`` restricted to tensors, containers and primitives; anything else is an
    :class:`UnsafeCheckpointError` naming the file and the first object it would have built."""
    try:
        return torch.load(path, weights_only=True, **kwargs)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(path, e) from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temporary file beside the destination, fsync, rename (Lightning's default writes through
    a temporary file in ``$TMPDIR`` and, across filesystems, copies it over the old checkpoint); reads with the safe
    loader."""

    def save_checkpoint(self, checkpoint: dict, path: _PATH, storage_options=None) -> None:
        if get_filesystem(path).protocol not in ("file", ("file", "local")):
            return super().save_checkpoint(checkpoint, path, storage_options)
        write_file_atomic(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path: _PATH, map_location=lambda storage, loc: storage, weights_only=None) -> dict:
        """``weights_only=True`` whatever the caller asked (Lightning leaves the choice to ``torch.load``)."""
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as e:
            raise UnsafeCheckpointError(path, e) from None


def load_checkpoint_head(path: str | Path) -> dict:
    """A checkpoint's contents with tensors memory-mapped, not read (cheap for a completeness check)."""
    return safe_load(path, map_location="cpu", mmap=True)


def newest_checkpoint(dirs: list[Path]) -> tuple[Path | None, list[str]]:
    """The complete checkpoint with the highest global step in ``dirs`` (``last.ckpt`` wins a tie), and the
    unreadable or refused ones (``name (why)``), which are never chosen."""
    best, best_key, broken = None, None, []
    for d in dirs:
        for p in sorted(Path(d).glob("*.ckpt")):
            try:
                step = int(load_checkpoint_head(p)["global_step"])
            except UnsafeCheckpointError as e:
                broken.append(f"{p.name} (refused: it would build {e.found or 'objects'}, not tensors or plain data)")
                continue
            except Exception as e:  # truncated, empty, not a checkpoint
                broken.append(f"{p.name} ({type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''})")
                continue
            key = (step, p.stem == "last", p.stat().st_mtime)
            if best_key is None or key > best_key:
                best, best_key = p, key
    return best, broken


def adapter_files(ckpt_path: str | Path) -> dict[str, bytes] | None:
    """The adapter files saved inside a checkpoint (``None`` for checkpoints written before they were)."""
    return load_checkpoint_head(ckpt_path).get(ADAPTER_KEY)


class AdapterCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` whose checkpoints are written atomically, carry their adapter and get
    ``<name>-adapter/`` (adapter_config.json + adapter_model.safetensors) beside them; see the module docstring."""

    _adapter: dict[str, bytes] | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # the default: replace; keep a user's plugin
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if (
            trainer.is_global_zero
            and self.dirpath
            and get_filesystem(self.dirpath).protocol in ("file", ("file", "local"))
        ):
            d = check_output_dir(self.dirpath, "checkpoint dirpath")  # now, not at the first save hours later
            for stale in d.glob(f".*{TMP_SUFFIX}"):  # left by a save that was killed
                stale.unlink(missing_ok=True)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if self._adapter is not None:
            checkpoint[ADAPTER_KEY] = self._adapter

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        staging = dest = None
        if trainer.is_global_zero:
            dest = adapter_dir_for(filepath)
            staging = make_staging_dir(dest)
        try:
            if staging is not None:
                module = trainer.lightning_module
                module.model.save_pretrained(staging)
                vlat = next((c for c in trainer.callbacks if type(c).__name__ == "VirtualLongformCallback"), None)
                training = training_settings(module.hparams, vlat)
                write_record(staging, module.hparams.model_name_or_path, module.model, training)
                self._adapter = {f.name: f.read_bytes() for f in sorted(staging.iterdir()) if f.is_file()}
            super()._save_checkpoint(trainer, filepath)  # the checkpoint (with the adapter's bytes) is the commit
            if staging is not None:
                publish_dir(staging, dest)
        finally:
            self._adapter = None
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)

    def _remove_checkpoint(self, trainer, filepath: str) -> None:
        super()._remove_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            shutil.rmtree(adapter_dir_for(filepath), ignore_errors=True)
