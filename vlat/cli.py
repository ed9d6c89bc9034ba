"""``train.py``'s LightningCLI: ``python train.py --config configs/vlat_default.yaml`` (no subcommand)."""

from __future__ import annotations

from lightning.pytorch.cli import LightningCLI

from vlat.data import YODAS2MCQADataModule
from vlat.lightning_module import VLATModule


class VLATCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.model_name_or_path", "data.model_name_or_path")
        parser.add_argument("--ckpt_path", type=str | None, default=None, help="resume from this .ckpt ('last' ok)")


def train_main(args: list[str] | None = None) -> VLATCLI:
    cli = VLATCLI(
        VLATModule,
        YODAS2MCQADataModule,
        run=False,
        args=args,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"description": "VLAT / LoRA fine-tuning of Qwen2-Audio on long-audio MCQA"},
    )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.get("ckpt_path"))
    return cli
