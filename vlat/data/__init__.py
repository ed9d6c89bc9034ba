"""YODAS2-MCQA data: sources and column layouts (:mod:`records`), the streaming batcher (:mod:`stream`) and the
Lightning data module (:mod:`datamodule`)."""

from vlat.data.datamodule import YODAS2MCQADataModule
from vlat.data.records import ColumnMapping, Record, nearest_bucket, normalize, open_rows
from vlat.data.stream import MCQABatchStream, StreamSpec

__all__ = [
    "ColumnMapping",
    "MCQABatchStream",
    "Record",
    "StreamSpec",
    "YODAS2MCQADataModule",
    "nearest_bucket",
    "normalize",
    "open_rows",
]
