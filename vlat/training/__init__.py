"""VLAT training with Lightning (arXiv 2510.15231, §6): the LightningModule (:mod:`~vlat.training.module`), the
virtual-length callback (:mod:`~vlat.training.vlat_callback`), checkpoints and the adapter's training record
(:mod:`~vlat.training.checkpointing`, :mod:`~vlat.training.adapter_record`), the speed and memory policies
(activation checkpointing, mask-free LoRA dropout, fused kernels, available memory) and the command line
(:mod:`~vlat.training.cli`)."""
