"""``train.py``'s LightningCLI: ``python train.py --config configs/vlat_default.yaml`` (no subcommand).

Configuration mistakes (:class:`vlat.errors.ConfigError`, raised before the model loads) end the run with
``train.py: error: <field or file>: <problem>`` and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from vlat.checkpointing import UnsafeCheckpointError, load_checkpoint_head, newest_checkpoint
from vlat.data import YODAS2MCQADataModule
from vlat.errors import ConfigError
from vlat.lightning_module import VLATModule
from vlat.vlat_callback import strategy_factors


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

    def before_instantiate_classes(self) -> None:
        """A callback's own errors would come out of jsonargparse buried in a union-type message: checked here."""
        for cb in self.config.get("trainer.callbacks") or []:
            if str(getattr(cb, "class_path", "")).endswith("VirtualLongformCallback"):
                args = cb.get("init_args") or {}
                strategy_factors(args.get("strategy", "default"), args.get("factors"))


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
        cli = VLATCLI(
            VLATModule,
            YODAS2MCQADataModule,
            run=False,
            args=args,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"description": "VLAT / LoRA fine-tuning of Qwen2-Audio on long-audio MCQA"},
        )
        ckpt_path = resolve_ckpt_path(cli.config.get("ckpt_path"), cli.trainer)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    except ConfigError as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    return cli
