"""A test callback: the question ids each rank trains and validates on (and the audio tokens of each training
sample's prompt), written at the end of the epoch."""

import json
from pathlib import Path

import lightning as L


class RecordIds(L.Callback):
    def __init__(self, out: str):
        self.out, self.ids = Path(out), {"train": [], "val": [], "train_audio_tokens": [], "train_pass": []}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.ids["train"] += batch.get("id", [])
        self.ids["train_pass"] += [batch.get("data_pass")] * len(batch.get("id", []))
        if batch.get("n", 0):
            audio = batch["input_ids"] == pl_module.audio_token_id
            self.ids["train_audio_tokens"] += audio.sum(-1).tolist()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.ids["val"] += batch.get("id", [])

    def on_train_epoch_end(self, trainer, pl_module):
        self.write(trainer)

    def on_train_end(self, trainer, pl_module):
        self.write(trainer)

    def write(self, trainer):
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.ids))
