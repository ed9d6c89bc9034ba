"""A test callback that makes the ``at``-th checkpoint save fail while the checkpoint is being written: ``kill``
(SIGKILL, as a pre-empted job) or ``enospc`` (a full disk). Used through the YAML config, as a user's callback."""

import errno
import os
import signal

import lightning as L


class _Fault:
    def __init__(self, how: str):
        self.how = how

    def __reduce__(self):  # runs inside torch.save, with the checkpoint file open
        if self.how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise OSError(errno.ENOSPC, "No space left on device")


class FailSave(L.Callback):
    def __init__(self, at: int, how: str = "kill"):
        self.at, self.how, self.saves = at, how, 0

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self.saves += 1
        if self.saves == self.at:
            checkpoint["fault"] = _Fault(self.how)


class NaNFeaturesAt(L.Callback):
    """Training batches ``batch_idx in at`` get NaN audio features, so their loss is not finite."""

    def __init__(self, at: list[int]):
        self.at = set(at)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx in self.at and batch.get("n"):
            batch["input_features"].fill_(float("nan"))
