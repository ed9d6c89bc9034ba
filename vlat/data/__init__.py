"""YODAS2-MCQA data: sources and units (:mod:`sources`), column layouts (:mod:`records`), who reads what
(:mod:`plan`), the streaming batcher (:mod:`stream`) and the Lightning data module (:mod:`datamodule`)."""

from vlat.data.buckets import bucket_of
from vlat.data.datamodule import YODAS2MCQADataModule
from vlat.data.records import ColumnMapping, Record, normalize
from vlat.data.sources import Source, SourceError, read_rows, resolve
from vlat.data.stream import MCQABatchStream, StreamSpec

__all__ = [
    "ColumnMapping",
    "MCQABatchStream",
    "Record",
    "Source",
    "SourceError",
    "StreamSpec",
    "YODAS2MCQADataModule",
    "bucket_of",
    "normalize",
    "read_rows",
    "resolve",
]
