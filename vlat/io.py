"""Crash-safe writes, the one place that publishes files: single files and directories are assembled beside their
destination and renamed into place; a job's set of output files is switched in one step (:func:`published_files`).

A run that dies half-way leaves the previous output (or nothing) — never a half-written file or directory, never
a mix of old and new files.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from vlat.errors import ConfigError

log = logging.getLogger("vlat")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_staging_dir(dest: Path) -> Path:
    """An empty directory next to ``dest`` (same filesystem, so the final rename is atomic), named with this
    process's id: staging directories of ``dest`` left by killed processes are removed here."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        for stale in dest.parent.glob(f".{dest.name}.*"):
            pid = stale.name[len(dest.name) + 2 :].split(".", 1)[0]
            if pid.isdigit() and stale.is_dir() and not _alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{os.getpid()}.", dir=dest.parent))
    except OSError as e:
        raise OSError(f"cannot write to {dest}: {e.strerror or e}") from e
    tmp.chmod(0o755)
    return tmp


def publish_dir(staging: Path, dest: Path) -> None:
    """Replace ``dest`` with the finished ``staging`` directory."""
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
        os.replace(staging, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, dest)


TMP_SUFFIX = ".partial"  # what an interrupted write leaves: a hidden ``.<name>.<random>.partial``, never ``<name>``


def write_file_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """``write(f)`` into a hidden temporary file beside ``path`` (same filesystem, whatever ``$TMPDIR`` is), flushed
    to disk, then renamed over ``path`` in one step: ``path`` is the old file or the new one, never part of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    write_file_atomic(path, lambda f: f.write(text.encode()))


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


CURRENT = ".current"  # out_dir/.current -> .gen-XXXX: the published generation of a job's output files


def check_output_dir(out_dir: str | os.PathLike, field: str = "--output") -> Path:
    """The directory a job will publish into, checked before any model loads (created only when the job publishes):
    a file in the way or an unwritable place fails here in one line, not after hours."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{field} {out}: exists and is not a directory")
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{field} {out}: cannot write there ({probe} is not a directory)")
    try:
        tempfile.TemporaryFile(dir=probe).close()
    except OSError as e:
        raise ConfigError(f"{field} {out}: cannot write there ({e.strerror or e})") from e
    return out


def _symlink_atomic(target: str, link: Path) -> None:
    """Point ``link`` at ``target`` in one step (a new link renamed over the old one)."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}{TMP_SUFFIX}")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _fsync_tree(d: Path) -> None:
    for f in d.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(path: Path, blocking: bool = True):
    """An exclusive ``flock`` on ``path`` (created if needed) for the ``with`` block; yields whether it was taken
    (always, when ``blocking``). The kernel releases it when the process dies."""
    fh = open(path, "a")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        fh.close()


PUBLISH_LOCK = ".publish.lock"  # held while a job creates its generation, removes dead ones, or switches


def _remove_dead_generations(out: Path, current: str | None) -> None:
    """Generations left by killed jobs: a ``.gen-*`` directory whose ``.lock`` no live job holds (a job holds its own
    from creation to the end of its publish). Called under the publish lock."""
    names = {p.name.removesuffix(".lock") for p in out.glob(".gen-*")}
    for name in sorted(names - {current}):
        lock = out / f"{name}.lock"
        with _locked(lock, blocking=False) as dead:
            if dead:
                shutil.rmtree(out / name, ignore_errors=True)
                lock.unlink(missing_ok=True)


@contextlib.contextmanager
def published_files(out_dir: str | os.PathLike):
    """Yield an empty staging directory inside ``out_dir`` (the output's own filesystem, mount points included); on
    success its files replace the job's previous outputs in one switch.

    Each output ``out_dir/<name>`` is a link to ``.current/<name>`` and ``.current`` links to the generation
    directory holding the files; publishing renames one new ``.current`` over the old. A job killed at any moment
    leaves the previous set or the new one, never a mix, and nothing half-written under a normal name. Other
    entries of ``out_dir`` (``compare.py``'s runs) are untouched. Jobs publishing into one ``out_dir`` at once never
    touch each other's staging: each holds a lock on its own generation, switches take turns, and the last to
    finish is published (it says so when another job published while it ran).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    current = out / CURRENT

    def target() -> str | None:
        return os.readlink(current) if current.is_symlink() else None

    with _locked(out / PUBLISH_LOCK):
        _remove_dead_generations(out, target())
        gen = Path(tempfile.mkdtemp(prefix=".gen-", dir=out))
        mine = open(out / f"{gen.name}.lock", "a")
        fcntl.flock(mine, fcntl.LOCK_EX)
        started = target()
    try:
        yield gen
        gen.chmod(0o755)
        _fsync_tree(gen)
        names = sorted(f.name for f in gen.iterdir())
        with _locked(out / PUBLISH_LOCK):
            old = target()
            if old != started:
                log.warning("%s: another job published here while this one ran; this one's files replace them", out)
            legacy = [n for n in names if (out / n).exists() and not (out / n).is_symlink()]
            if legacy:  # plain files from before: moved behind .current first (hard links: same content), so they
                prev = Path(tempfile.mkdtemp(prefix=".gen-", dir=out))  # stay visible until the switch
                for n in legacy:
                    os.link(out / n, prev / n)
                _symlink_atomic(prev.name, current)
                if old:
                    shutil.rmtree(out / old, ignore_errors=True)
                old = prev.name
            for n in names:  # links through .current: dangling (absent) or the old generation's file until the switch
                if not ((out / n).is_symlink() and os.readlink(out / n) == f"{CURRENT}/{n}"):
                    _symlink_atomic(f"{CURRENT}/{n}", out / n)
            _symlink_atomic(gen.name, current)  # the switch
            if old and old != gen.name:
                shutil.rmtree(out / old, ignore_errors=True)
                (out / f"{old}.lock").unlink(missing_ok=True)
    except BaseException:
        shutil.rmtree(gen, ignore_errors=True)
        raise
    finally:
        (out / f"{gen.name}.lock").unlink(missing_ok=True)
        mine.close()
