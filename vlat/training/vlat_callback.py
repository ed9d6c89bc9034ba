"""Virtual Longform Audio Training (arXiv 2510.15231, §6.1; sampling strategies of Appendix E.1).

Before every training batch a virtual factor f is drawn and every audio run of the batch is mapped onto
``f x original_audio_tokens`` positions (Partial YaRN used as positional augmentation). Validation, test and
prediction run with no virtual length. Draws come from a seeded generator advanced once per training batch, so they
are identical on every DDP rank and its state is saved in and restored from checkpoints.

``per_sample``: the paper's §6.1 words it "for each sample"; the default draws one factor per batch (every sample of
a batch shares it). With ``per_sample`` each sample draws its own: the shared generator still advances once per
batch (it draws the batch's seed), and the samples' factors come from that seed and the DDP rank, so ranks draw
different factors for their different samples and a resumed run continues the same sequence.
"""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch

from vlat.errors import ConfigError
from vlat.rope import current_config, set_virtual_audio_tokens

Strategy = Literal["default", "dense", "very_dense", "limited", "fixed", "custom"]


def strategy_factors(strategy: Strategy, factors: list[float] | None = None) -> list[float]:
    """The discrete set a strategy samples uniformly from (Appendix E.1)."""
    if strategy == "custom":
        if not factors or any(not f > 0 for f in factors):
            raise ConfigError(f"factors: custom strategy needs a non-empty list of positive factors, got {factors}")
        return [float(f) for f in factors]
    if factors is not None:
        raise ConfigError(f"factors: only the custom strategy takes a list (strategy is {strategy!r})")
    table = {
        "default": [1.0, 5.0, 10.0, 15.0, 20.0, 25.0],
        "dense": torch.linspace(1, 25, 100, dtype=torch.float64).tolist(),
        "very_dense": torch.linspace(1, 25, 1000, dtype=torch.float64).tolist(),
        "limited": [1.0, 5.0, 10.0],
        "fixed": [20.0],
    }
    if strategy not in table:
        raise ConfigError(f"strategy: {strategy!r} is not one of default, dense, very_dense, limited, fixed, custom")
    return table[strategy]


class VirtualLongformCallback(L.Callback):
    """Samples the virtual audio length of each training batch.

    Args:
        strategy: ``default`` {1,5,10,15,20,25}, ``dense`` (100 points on [1, 25]), ``very_dense`` (1000 points),
            ``limited`` {1,5,10}, ``fixed`` (always 20), or ``custom`` (``factors``).
        factors: the factor list of the ``custom`` strategy.
        seed: seed of the factor sequence.
        per_sample: draw a factor for every sample instead of one per batch.
    """

    def __init__(
        self,
        strategy: Strategy = "default",
        factors: list[float] | None = None,
        seed: int = 0,
        per_sample: bool = False,
    ):
        self.strategy = strategy
        self.factors = strategy_factors(strategy, factors)
        self.seed = seed
        self.per_sample = per_sample
        self.generator = torch.Generator().manual_seed(seed)
        self.draws = 0
        self.last_factor: float | None = None

    def draw(self) -> float:
        idx = int(torch.randint(len(self.factors), (1,), generator=self.generator))
        self.draws += 1
        return self.factors[idx]

    def draw_per_sample(self, samples: int, rank: int = 0) -> list[float]:
        """One factor per sample; advances the shared generator once (by the batch's seed), like :meth:`draw`."""
        batch_seed = int(torch.randint(2**62, (1,), generator=self.generator))
        self.draws += 1
        local = torch.Generator().manual_seed(batch_seed + rank)
        return [self.factors[int(i)] for i in torch.randint(len(self.factors), (samples,), generator=local)]

    def setup(self, trainer, pl_module, stage: str) -> None:  # before the model loads
        if getattr(pl_module, "hparams", {}).get("rope_method", "partial_pi") == "vanilla":
            raise ConfigError("rope_method: VLAT needs an audio RoPE method (partial_pi / partial_yarn), not vanilla")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        original = current_config(pl_module.model).original_audio_tokens
        if self.per_sample:
            rows = batch["input_ids"].shape[0] if "input_ids" in batch else 0  # an empty (padding) batch has none
            fs = self.draw_per_sample(rows, trainer.global_rank)
            spans = tuple(max(1, round(f * original)) for f in fs)
            set_virtual_audio_tokens(pl_module.model, spans or None)
            if not fs:
                return
            f = sum(fs) / len(fs)
        else:
            f = self.draw()
            set_virtual_audio_tokens(pl_module.model, max(1, round(f * original)))
        self.last_factor = f
        # per sample: the batch's mean factor
        pl_module.log("vlat/virtual_factor", f, on_step=True, on_epoch=False, batch_size=1)

    def _clear(self, trainer, pl_module) -> None:
        set_virtual_audio_tokens(pl_module.model, None)

    on_validation_start = on_test_start = on_predict_start = on_train_end = _clear

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "draws": self.draws,
            "strategy": self.strategy,
            "per_sample": self.per_sample,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.draws = state["draws"]
