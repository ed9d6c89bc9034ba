"""Errors: bad samples (named, with a ``reason`` code long jobs count) and bad configuration (one line, exit 2)."""

from __future__ import annotations

# every reason a sample is skipped for: the counters' fixed layout (``data/skipped/<reason>`` in TensorBoard)
REASONS = (
    "bad_answer",
    "bad_json",
    "bad_options",
    "bad_question",
    "corrupt_audio",
    "empty_audio",
    "missing_audio",
    "missing_field",
    "nan_audio",
    "nonfinite_loss",  # a training batch whose loss was not finite (its samples are named in the log)
    "too_long",
)


class BadSampleError(ValueError):
    """A sample that cannot be used: ``reason`` is one of :data:`REASONS`."""

    def __init__(self, sample: str, reason: str, detail: str):
        if reason not in REASONS:
            raise AssertionError(f"unknown skip reason {reason!r}: add it to vlat.errors.REASONS")
        self.sample, self.reason, self.detail = sample, reason, detail
        super().__init__(f"{sample}: {detail}")


class ConfigError(ValueError):
    """A configuration or input mistake found before any model loads: ``train.py`` / ``evaluate.py`` print
    ``error: <field or file>: <problem>`` and exit 2."""
