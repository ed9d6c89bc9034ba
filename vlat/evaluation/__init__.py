"""Evaluation: shared-prefix scoring (:mod:`prefix`), the adapters x methods x lengths loop (:mod:`runner`) and
its outputs (:mod:`report`)."""

from vlat.evaluation.prefix import encode_audio, score_questions
from vlat.evaluation.report import markdown_table, write_outputs
from vlat.evaluation.runner import EvalInputError, EvalSpec, Evaluator

__all__ = [
    "EvalInputError",
    "EvalSpec",
    "Evaluator",
    "encode_audio",
    "markdown_table",
    "score_questions",
    "write_outputs",
]
