"""``train.py``'s LightningCLI: ``python train.py --config configs/vlat_default.yaml`` (no subcommand).

Configuration mistakes (:class:`vlat.errors.ConfigError`, raised before the model loads) end the run with
``train.py: error: <field or file>: <problem>`` and exit code 2; a full disk or a permission error during the run
with one such line and exit code 1.
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path

from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from vlat.data import YODAS2MCQADataModule
from vlat.errors import ConfigError
from vlat.io import check_output_dir
from vlat.training.checkpointing import UnsafeCheckpointError, load_checkpoint_head, newest_checkpoint
from vlat.training.module import VLATModule
from vlat.training.progress import StepProgressBar
from vlat.training.vlat_callback import strategy_factors


class VLATCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.model_name_or_path", "data.model_name_or_path")
        parser.link_arguments("model.audio_compression", "data.audio_compression")
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="resume from this .ckpt ('last': the newest complete one)",
        )

    def instantiate_trainer(self, **kwargs):
        """Lightning's default progress bar becomes one that counts optimizer steps (:mod:`vlat.training.progress`)."""
        trainer = super().instantiate_trainer(**kwargs)
        bar = trainer.progress_bar_callback
        if type(bar) in (RichProgressBar, TQDMProgressBar):
            trainer.callbacks[trainer.callbacks.index(bar)] = StepProgressBar()
        return trainer

    def before_instantiate_classes(self) -> None:
        """A callback's own errors would come out of jsonargparse buried in a union-type message: checked here."""
        for cb in self.config.get("trainer.callbacks") or []:
            if str(getattr(cb, "class_path", "")).endswith("VirtualLongformCallback"):
                args = cb.get("init_args") or {}
                strategy_factors(args.get("strategy", "default"), args.get("factors"))


# class paths a config may still name from before vlat's modules were grouped into packages (2026-12-06)
MOVED_CLASS_PATHS = {
    "vlat.vlat_callback.": "vlat.training.vlat_callback.",
    "vlat.checkpointing.": "vlat.training.checkpointing.",
    "vlat.lightning_module.": "vlat.training.module.",
}


def check_moved_class_paths(args: list[str]) -> None:
    """A config naming a class at its old path: one line saying where it is now (jsonargparse's own message is a
    screen of union-type alternatives)."""
    files = [b for a, b in zip(args, args[1:], strict=False) if a == "--config"]
    files += [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    for f in files:
        try:
            text = Path(f).read_text()
        except OSError:
            continue  # jsonargparse names a missing config itself
        for old, new in MOVED_CLASS_PATHS.items():
            if old in text:
                name = text[text.index(old) :].split()[0]
                raise ConfigError(f"config {f}: class_path {name} is now {name.replace(old, new, 1)} (edit the file)")


def resolve_ckpt_path(ckpt_path: str | None, trainer) -> str | None:
    """``last`` -> the newest complete checkpoint in the checkpoint directories (by global step, not by name: a run
    killed after ``epoch=0-step=8.ckpt`` and before ``last.ckpt`` resumes from step 8); none yet -> a fresh start;
    only unreadable ones -> an error."""
    if ckpt_path != "last":
        if ckpt_path is not None and not Path(ckpt_path).is_file():
            raise ConfigError(f"ckpt_path {ckpt_path}: no such checkpoint")
        if ckpt_path is not None:
            try:
                load_checkpoint_head(ckpt_path)  # refused here, in one line, before the model loads
            except UnsafeCheckpointError as e:
                raise ConfigError(f"ckpt_path {e}") from None
        return ckpt_path
    dirs = [Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if cb.dirpath and Path(cb.dirpath).is_dir()]
    best, broken = newest_checkpoint(dirs)
    where = ", ".join(map(str, dirs)) or "the checkpoint directory"
    if best is None and broken:
        raise ConfigError(f"ckpt_path last: no complete checkpoint in {where} (unreadable: {'; '.join(broken)})")
    if broken:
        rank_zero_warn(f"ckpt_path last: skipping unreadable {'; '.join(broken)}")
    if best is None:
        rank_zero_info(f"[vlat] ckpt_path last: no checkpoint in {where} yet: starting from scratch")
        return None
    rank_zero_info(f"[vlat] resuming from {best}")
    return str(best)


def train_main(args: list[str] | None = None) -> VLATCLI:
    try:
        check_moved_class_paths(sys.argv[1:] if args is None else list(args))
        cli = VLATCLI(
            VLATModule,
            YODAS2MCQADataModule,
            run=False,
            args=args,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"description": "VLAT / LoRA fine-tuning of Qwen2-Audio on long-audio MCQA"},
        )
        check_log_dirs(cli.trainer)
        ckpt_path = resolve_ckpt_path(cli.config.get("ckpt_path"), cli.trainer)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    except ConfigError as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:
        failed = filesystem_error(e)
        if failed is None:
            raise
        where = f"{failed.filename}: " if failed.filename else ""
        print(
            f"train.py: error: {where}{failed.strerror} (checkpoints already written are intact; free the space or "
            "fix the permission, then resume with --ckpt_path last)",
            file=sys.stderr,
        )
        sys.exit(1)
    return cli


def check_log_dirs(trainer) -> None:
    """Every logger's directory must be writable: a one-line error now, not a traceback when it first writes."""
    for logger in trainer.loggers:
        root = getattr(logger, "root_dir", None) or getattr(logger, "save_dir", None)
        if root and get_filesystem(root).protocol in ("file", ("file", "local")):
            check_output_dir(root, f"trainer.logger ({type(logger).__name__}) save_dir")


_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


def filesystem_error(e: BaseException) -> OSError | None:
    """The filesystem error (full disk, no permission, ...) behind an exception, following its chain; None if none."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _ENVIRONMENT_ERRNOS:
            return e
        e = e.__cause__ or e.__context__
    return None
