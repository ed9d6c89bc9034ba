"""Checkpoints that also write the LoRA adapter in PEFT format, loadable with ``PeftModel.from_pretrained``."""

from __future__ import annotations

import shutil
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint

from vlat.io import make_staging_dir, publish_dir


def adapter_dir_for(ckpt_path: str | Path) -> Path:
    """``epoch=0-step=10.ckpt`` -> ``epoch=0-step=10-adapter/``."""
    p = Path(ckpt_path)
    return p.with_name(p.stem + "-adapter")


class AdapterCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` that writes ``<name>-adapter/`` (adapter_config.json + adapter_model.safetensors) beside
    every ``<name>.ckpt`` it keeps, and removes it with the checkpoint. Written atomically on global rank 0."""

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            dest = adapter_dir_for(filepath)
            tmp = make_staging_dir(dest)
            try:
                trainer.lightning_module.model.save_pretrained(tmp)
                publish_dir(tmp, dest)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise

    def _remove_checkpoint(self, trainer, filepath: str) -> None:
        super()._remove_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            shutil.rmtree(adapter_dir_for(filepath), ignore_errors=True)
