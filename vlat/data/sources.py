"""Where rows come from: a source resolved into *units* whose row counts are known before any data is read.

A unit is what can be read on its own: one parquet row group (row count and size from the file footer) or one JSON
table (``.jsonl`` / ``.json``, metadata only, parsed whole). Knowing every unit's row count up front is what lets
:mod:`vlat.data.plan` hand each DataLoader worker of each rank an exact share of the questions.

Layouts of a source (``data.source`` / ``evaluate.py --data``):
- the published YODAS2-MCQA layout: one folder per clip length in minutes (``2/``, ``5/``, ``10/``) holding
  split-named parquet shards (``train-00000-of-00012.parquet``, ``test-…``); ``lengths`` picks folders;
- ``<split>-*.parquet`` shards at the top or under ``data/`` (the usual hub layout);
- ``<split>.jsonl`` / ``<split>.parquet`` / ``<split>.json`` in a directory, or a single such file.

A hub id (``yophis/yodas2-mcqa``) is read through ``huggingface_hub``'s ``HfFileSystem``: the same directory logic and
the same parquet reader as a local mirror, row group by row group over HTTP range requests (what ``datasets``
streaming does under the hood), so a local mirror of the hub layout and the hub itself go through one code path.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from vlat.errors import ConfigError
from vlat.models.loading import is_hub_id

TABLE_SUFFIXES = (".jsonl", ".parquet", ".json")


class SourceError(ConfigError):
    """A source that cannot be read at all (missing, empty, wrong layout): reported in one line."""


@dataclass(frozen=True)
class Unit:
    """One independently readable block of rows."""

    path: str  # file path on the source's filesystem
    name: str  # path relative to the source root (for ids and messages)
    row_group: int | None  # parquet row group; None = the whole (JSON) file
    num_rows: int
    row_offset: int  # rows of the same file before this unit (row ids are file-global)
    bytes_per_row: float  # uncompressed bytes per row from the parquet footer (0 for JSON: metadata only)
    folder_minutes: float | None  # the clip-length folder it came from, if any

    @property
    def random_access(self) -> bool:
        """JSON units are parsed whole, so their rows can be permuted freely; parquet units are read in order."""
        return self.row_group is None


@dataclass(frozen=True)
class Source:
    spec: str  # what the user gave
    hub: bool
    root: str
    units: tuple[Unit, ...]
    folder_lengths: tuple[float, ...]  # clip-length folders present in the source (minutes), () if none

    @property
    def num_rows(self) -> int:
        return sum(u.num_rows for u in self.units)


def filesystem(hub: bool):
    """The fsspec filesystem of a source (a function so tests can point the hub at a local mirror)."""
    if hub:
        from huggingface_hub import HfFileSystem

        return HfFileSystem()
    from fsspec.implementations.local import LocalFileSystem

    return LocalFileSystem()


def _minutes(name: str) -> float | None:
    try:
        value = float(name)
    except ValueError:
        return None
    return value if value > 0 else None


def _split_files(fs, folder: str, split: str) -> list[str]:
    """``<split>-*.parquet`` shards (or one ``<split>.parquet``) directly inside ``folder``, sorted."""
    shards = sorted(fs.glob(f"{folder}/{split}-*.parquet")) or sorted(fs.glob(f"{folder}/{split}.parquet"))
    return [str(p) for p in shards]


def _listing(fs, root: str) -> list[str]:
    try:
        return sorted(Path(str(p)).name for p in fs.ls(root, detail=False))
    except (FileNotFoundError, NotADirectoryError):
        return []


def find_files(
    fs, root: str, split: str, lengths: list[float] | None
) -> tuple[list[tuple[str, float | None]], tuple[float, ...]]:
    """Files of ``split`` under ``root`` as (path, clip-length folder); also every clip-length folder present."""
    tables = [f"{root}/{split}{ext}" for ext in TABLE_SUFFIXES if fs.isfile(f"{root}/{split}{ext}")]
    if tables:
        return [(tables[0], None)], ()
    folders = {}
    for entry in _listing(fs, root):
        minutes = _minutes(entry)
        if minutes is not None and fs.isdir(f"{root}/{entry}"):
            folders[minutes] = f"{root}/{entry}"
    if folders:
        present = tuple(sorted(folders))
        if lengths is not None:
            missing = [x for x in lengths if x not in folders]
            if missing:
                raise SourceError(f"lengths {missing}: no such clip-length folder (present: {list(present)} minutes)")
        files = [
            (path, minutes)
            for minutes in sorted(folders)
            if lengths is None or minutes in lengths
            for path in _split_files(fs, folders[minutes], split)
        ]
        if not files:
            raise SourceError(f"no {split}-*.parquet shards in the clip-length folders {list(present)}")
        return files, present
    for sub in (root, f"{root}/data"):
        shards = _split_files(fs, sub, split)
        if shards:
            return [(p, None) for p in shards], ()
    have = [n for n in _listing(fs, root) if n.endswith(TABLE_SUFFIXES) or _minutes(n)]
    raise SourceError(
        f"no {split}.jsonl / {split}.parquet / {split}.json, no {split}-*.parquet shards and no clip-length folders "
        f"(found: {have or 'nothing usable'})"
    )


def resolve(source: str, split: str, lengths: list[float] | None = None) -> Source:
    """Resolve ``source`` (local file or directory, or hub dataset id) into its units; reads footers only."""
    local = Path(source).expanduser()
    hub = not local.exists() and is_hub_id(source)
    if not local.exists() and not hub:
        raise SourceError(f"{source}: no such file or directory")
    fs = filesystem(hub)
    if hub:
        root = f"datasets/{source}"
    else:
        root = str(local.resolve())
    if not hub and local.is_file():
        files, present, root = [(root, None)], (), str(local.resolve().parent)
    else:
        files, present = find_files(fs, root, split, lengths)
    units: list[Unit] = []
    for path, minutes in files:
        units.extend(_file_units(fs, path, path[len(root) + 1 :] if path.startswith(root + "/") else path, minutes))
    return Source(source, hub, root, tuple(units), present)


def _file_units(fs, path: str, name: str, minutes: float | None) -> list[Unit]:
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        with fs.open(path, "rb") as f:
            meta = pq.ParquetFile(f).metadata
        out, offset = [], 0
        for rg in range(meta.num_row_groups):
            g = meta.row_group(rg)
            if g.num_rows:
                out.append(Unit(path, name, rg, g.num_rows, offset, g.total_byte_size / g.num_rows, minutes))
            offset += g.num_rows
        return out
    if path.endswith((".jsonl", ".json")):
        n = len(json_rows(_FsRef(fs), path))
        return [Unit(path, name, None, n, 0, 0.0, minutes)] if n else []
    raise SourceError(f"{path}: unsupported table format (use .jsonl, .json or .parquet)")


class _FsRef:
    """Hashable handle so parsed JSON tables can be cached per process."""

    def __init__(self, fs):
        self.fs = fs

    def __hash__(self) -> int:
        return hash(type(self.fs).__name__)

    def __eq__(self, other) -> bool:
        return isinstance(other, _FsRef) and type(other.fs) is type(self.fs)


def bad_line(where: str, error: str) -> dict:
    """A JSONL line that does not parse: :func:`vlat.data.records.normalize` reports it as ``bad_json``."""
    return {"_bad_json": where, "_error": error}


@lru_cache(maxsize=4)
def json_rows(fsref: _FsRef, path: str) -> tuple[dict, ...]:
    """Rows of a ``.jsonl`` (one object per line; unparsable lines kept as :func:`bad_line` rows) or ``.json`` table."""
    with fsref.fs.open(path, "rb") as f:
        raw = f.read()
    name = Path(path).name
    if path.endswith(".json"):
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise SourceError(f"{name}: not valid JSON ({e})") from e
        if isinstance(data, dict) and isinstance(data.get("annotation"), list):  # the authors' layout
            data = data["annotation"]
        if not isinstance(data, list):
            raise SourceError(f"{name}: expected a list of rows or {{'annotation': [...]}}")
        return tuple(
            r if isinstance(r, dict) else bad_line(f"{name} row {i}", "not an object") for i, r in enumerate(data)
        )
    rows = []
    for i, line in enumerate(raw.split(b"\n")):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as e:
            row = bad_line(f"{name} line {i + 1}", str(e)[:120])
        rows.append(row)
    return tuple(rows)


def read_rows(source: Source, unit: Unit, order: list[int] | None = None, chunk_bytes: int = 8 << 20) -> Iterator[dict]:
    """Rows of ``unit`` as dicts (``order``: the unit's row order, random-access units only), parquet rows decoded
    about ``chunk_bytes`` at a time: one row of 2-minute inline audio. Arrow then reuses its decode buffers from one
    chunk to the next; at 32 MiB they were fresh, kernel-zeroed memory every time, which slowed two workers down more
    than one (``docs/benchmarks.md``).

    Parquet list-of-number columns (inline waveforms) come back as zero-copy float numpy arrays, other columns as
    Python values. Each row carries ``_row`` (its index in the file) and ``_unit`` (the unit's name).
    """
    fs = filesystem(source.hub)
    if unit.random_access:
        rows = json_rows(_FsRef(fs), unit.path)
        for i in order if order is not None else range(len(rows)):
            yield {**rows[i], "_row": i, "_unit": unit.name}
        return
    import pyarrow.parquet as pq
    from fsspec.implementations.local import LocalFileSystem

    # a local file is read by arrow's own reader (no Python file object between the disk and the decoder: 5-10%
    # less decode time, docs/benchmarks.md); buffered and not pre-buffered either way: a row group (about 1.2 GB as
    # published) is read page by page, never whole
    local = isinstance(fs, LocalFileSystem)
    with contextlib.nullcontext(unit.path) if local else fs.open(unit.path, "rb") as f:
        pf = pq.ParquetFile(f, buffer_size=1 << 20, pre_buffer=False)
        row = unit.row_offset
        chunk_rows = max(1, min(1024, int(chunk_bytes // max(unit.bytes_per_row, 1.0))))
        for batch in pf.iter_batches(batch_size=chunk_rows, row_groups=[unit.row_group], use_threads=False):
            cols = {name: _column(batch.column(name)) for name in batch.schema.names}
            for i in range(batch.num_rows):
                yield {**{k: v(i) for k, v in cols.items()}, "_row": row, "_unit": unit.name}
                row += 1


def warm_arrow_to_numpy() -> None:
    """Make pyarrow's first conversion to numpy here: it imports pandas (about 0.2 s of CPU and 45 MiB in each process
    that does it). Called in the training process, so that DataLoader workers, forked anew every epoch, inherit it."""
    import pyarrow as pa

    pa.array([0]).to_numpy()


def _column(arr) -> Any:
    """Row accessor of one arrow column: list<number> -> numpy view per row, anything else -> Python values."""
    import pyarrow as pa

    t = arr.type
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and (
        pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type)
    ):
        offsets = arr.offsets.to_numpy()
        values = arr.values.to_numpy(zero_copy_only=False)
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        return lambda i: values[offsets[i] : offsets[i + 1]] if valid[i] else None
    py = arr.to_pylist()
    return py.__getitem__


def as_float_audio(values: np.ndarray) -> np.ndarray:
    """An inline waveform as float32 (integer PCM scaled to [-1, 1))."""
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.float32) / float(np.iinfo(values.dtype).max + 1)
    return values.astype(np.float32, copy=False)
