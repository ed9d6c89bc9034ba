"""Fine-tune Qwen2-Audio with VLAT: ``python train.py --config configs/vlat_default.yaml``.

Any key of the YAML can be overridden on the command line (``--trainer.max_steps 100``); ``--print_config`` shows the
resolved configuration; ``--ckpt_path last`` resumes.
"""

from vlat.training.cli import train_main

if __name__ == "__main__":
    train_main()
