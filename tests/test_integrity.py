"""Integrity: interrupted and failed checkpoint saves, resume from the newest complete state, the adapter saved with
a checkpoint, unwritable places found before the model loads."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from test_train import DDP_ONE_EPOCH, scalars, train, with_callback, write_config

from vlat.errors import ConfigError
from vlat.evaluation.runner import resolve_adapters, split_label
from vlat.testing.synth_data import QUESTIONS
from vlat.training.checkpointing import ADAPTER_KEY, newest_checkpoint
from vlat.training.cli import resolve_ckpt_path

EVERY_3 = {"trainer.limit_val_batches": 0, "trainer.callbacks.1.init_args.every_n_train_steps": 3}


def _complete(path: Path) -> int:
    return int(torch.load(path, weights_only=True)["global_step"])


def _other_filesystem_tmpdir(tmp_path: Path) -> dict:
    """$TMPDIR on another filesystem than the checkpoints (tmpfs when there is one)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.stat(shm).st_dev != os.stat(tmp_path).st_dev:
        d = shm / f"vlat-test-{os.getpid()}-{tmp_path.name}"
        d.mkdir(exist_ok=True)
        return {**os.environ, "TMPDIR": str(d)}
    return dict(os.environ)


def test_killed_while_overwriting_last_ckpt_resumes_from_the_newest_complete(tmp_path, tiny_model_dir, synth_dir):
    # saves: 1 step-3 ckpt, 2 last.ckpt (step 3), 3 step-6 ckpt, 4 last.ckpt (step 6) <- SIGKILL while writing it
    config, run = write_config(tmp_path, tiny_model_dir, synth_dir, **EVERY_3, **{"trainer.max_steps": 6})
    env = _other_filesystem_tmpdir(tmp_path)
    res = train(with_callback(config, "tests.faults.FailSave", at=4, how="kill"), check=False, env=env)
    assert res.returncode == -9, res.stderr[-2000:]
    ckpts = run / "checkpoints"
    assert _complete(ckpts / "last.ckpt") == 3  # the old last.ckpt is intact, not a 0-byte file
    assert _complete(ckpts / "epoch=0-step=6.ckpt") == 6
    assert [p.name for p in ckpts.iterdir() if p.name.endswith(".partial")]  # the torn write kept a hidden name
    if env.get("TMPDIR"):
        assert not list(Path(env["TMPDIR"]).iterdir())  # nothing staged in $TMPDIR
        shutil.rmtree(env["TMPDIR"])

    res = train(config, "--trainer.max_steps", "8", "--ckpt_path", "last")  # the same run, no fault
    assert "epoch=0-step=6.ckpt" in res.stderr + res.stdout  # the newest complete state, by step, not last.ckpt
    assert sorted(scalars(run, "train/loss"))[-2:] == [6, 7] and 3 not in _steps_of_second_run(run)
    assert not [p for p in ckpts.iterdir() if p.name.endswith(".partial")]  # cleaned at setup
    assert _complete(ckpts / "last.ckpt") == 8


def _steps_of_second_run(run: Path) -> set[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    last = sorted((run / "tb").glob("version_*"))[-1]
    ea = EventAccumulator(str(last))
    ea.Reload()
    return {e.step for e in ea.Scalars("train/loss")}


def test_full_disk_during_a_save_keeps_every_normal_name_complete(tmp_path, tiny_model_dir, synth_dir):
    config, run = write_config(tmp_path, tiny_model_dir, synth_dir, **EVERY_3, **{"trainer.max_steps": 6})
    res = train(with_callback(config, "tests.faults.FailSave", at=3, how="enospc"), check=False)  # the step-6 save
    err = res.stderr.strip().splitlines()
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert err[-1].startswith("train.py: error: ") and "No space left on device" in err[-1]
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["epoch=0-step=3-adapter", "epoch=0-step=3.ckpt", "last-adapter", "last.ckpt"]
    assert _complete(run / "checkpoints" / "last.ckpt") == 3


def test_evaluate_loads_the_adapter_saved_with_the_checkpoint(tmp_path, tiny_model_dir, synth_dir):
    config, run = write_config(
        tmp_path, tiny_model_dir, synth_dir, **EVERY_3, **{"trainer.max_steps": 6, "model.learning_rate": 0.02}
    )
    train(config)
    ckpts = run / "checkpoints"
    # a kill between publishing last.ckpt (step 6) and last-adapter/ leaves the step-3 adapter beside it
    shutil.rmtree(ckpts / "last-adapter")
    shutil.copytree(ckpts / "epoch=0-step=3-adapter", ckpts / "last-adapter")
    ckpt = torch.load(ckpts / "last.ckpt", weights_only=True)
    for name in ("last.ckpt", "epoch=0-step=6.ckpt"):  # Lightning's names contain '='
        [(label, adapter)] = resolve_adapters([str(ckpts / name)])
        assert label == f"run/{name.removesuffix('.ckpt')}"
        saved = (adapter / "adapter_model.safetensors").read_bytes()
        assert saved == ckpt[ADAPTER_KEY]["adapter_model.safetensors"]
        assert saved != (ckpts / "last-adapter" / "adapter_model.safetensors").read_bytes()
    from safetensors.torch import load_file

    weights = load_file(adapter / "adapter_model.safetensors")
    by_suffix = {k.split("language_model.", 1)[1]: v for k, v in ckpt["state_dict"].items()}
    assert len(weights) == len(by_suffix)
    for k, v in weights.items():  # PEFT names drop the adapter name: ...lora_A.weight <- ...lora_A.default.weight
        key = k.split("language_model.", 1)[1].replace(".weight", ".default.weight")
        torch.testing.assert_close(v, by_suffix[key])
    # the PEFT directory of a step checkpoint is the same adapter
    step6 = ckpts / "epoch=0-step=6-adapter" / "adapter_model.safetensors"
    assert step6.read_bytes() == torch.load(ckpts / "epoch=0-step=6.ckpt", weights_only=True)[ADAPTER_KEY][step6.name]


class _TouchOnLoad:
    """Unpickling this object creates ``marker``: what a malicious checkpoint would do, harmlessly."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.seam
def test_a_checkpoint_that_would_run_code_is_refused_in_one_line(tmp_path, tiny_model_dir, synth_dir, unloadable_model):
    config, run = write_config(tmp_path, tiny_model_dir, synth_dir, **EVERY_3, **{"trainer.max_steps": 6})
    train(config)
    ckpts = run / "checkpoints"
    marker = tmp_path / "code-ran"
    evil = ckpts / "epoch=9-step=99.ckpt"  # the highest step: what `--ckpt_path last` would otherwise pick
    torch.save(
        {**torch.load(ckpts / "last.ckpt", weights_only=True), "global_step": 99, "x": _TouchOnLoad(marker)}, evil
    )

    res = _evaluate("--model", unloadable_model, "--adapter", evil, "--data", synth_dir, "--output", tmp_path / "out")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr[-2000:]
    assert "epoch=9-step=99.ckpt: refused" in res.stderr and "weights_only=True" in res.stderr  # before the model loads
    res = train(config, "--ckpt_path", str(evil), check=False)
    err = res.stderr.strip().splitlines()
    assert res.returncode == 2 and err[-1].startswith("train.py: error: ckpt_path") and "refused" in err[-1]
    assert "Traceback" not in res.stderr
    assert not marker.exists()

    res = train(config, "--ckpt_path", "last", "--trainer.max_steps", "8")  # skipped by name; step 6 resumes
    assert "epoch=9-step=99.ckpt (refused" in res.stderr and "resuming from" in res.stdout + res.stderr
    assert "epoch=0-step=6.ckpt" in res.stdout + res.stderr or "last.ckpt" in res.stdout + res.stderr
    assert sorted(scalars(run, "train/loss"))[-2:] == [6, 7] and not marker.exists()
    assert _complete(ckpts / "last.ckpt") == 8


def test_label_path_parsing_keeps_lightning_names(tmp_path):
    assert split_label("runs/x/checkpoints/epoch=0-step=60.ckpt") == ("", "runs/x/checkpoints/epoch=0-step=60.ckpt")
    assert split_label("vlat=runs/x/checkpoints/epoch=0-step=60.ckpt") == (
        "vlat",
        "runs/x/checkpoints/epoch=0-step=60.ckpt",
    )
    assert split_label("base=dir") == ("base", "dir")
    (tmp_path / "epoch=1-adapter").mkdir()
    os.chdir(tmp_path)
    try:
        assert split_label("epoch=1-adapter") == ("", "epoch=1-adapter")  # an existing path is a path
    finally:
        os.chdir(Path(__file__).parent)


def test_ckpt_path_last_picks_the_highest_complete_step(tmp_path):
    d = tmp_path / "checkpoints"
    d.mkdir()
    torch.save({"global_step": 8}, d / "epoch=0-step=8.ckpt")
    (d / "last.ckpt").write_bytes(b"")  # what a copy interrupted at its start left
    best, broken = newest_checkpoint([d])
    assert best == d / "epoch=0-step=8.ckpt" and [b.split(" ")[0] for b in broken] == ["last.ckpt"]
    torch.save({"global_step": 8}, d / "last.ckpt")
    assert newest_checkpoint([d]) == (d / "last.ckpt", [])  # a tie goes to last.ckpt
    (d / "epoch=0-step=8.ckpt").write_bytes(b"PK\x03\x04 torn")
    (d / "last.ckpt").write_bytes(b"")

    class Trainer:
        checkpoint_callbacks = [type("C", (), {"dirpath": str(d)})()]

    with pytest.raises(
        ConfigError,
        match="no complete checkpoint.*last.ckpt.*epoch=0-step=8.ckpt|no complete checkpoint.*epoch=0-step=8.ckpt.*last.ckpt",
    ):
        resolve_ckpt_path("last", Trainer())
    shutil.rmtree(d)
    d.mkdir()
    assert resolve_ckpt_path("last", Trainer()) is None  # a first run with --ckpt_path last starts fresh
    with pytest.raises(ConfigError, match="nope.ckpt: no such checkpoint"):
        resolve_ckpt_path(str(tmp_path / "nope.ckpt"), Trainer())


def test_unwritable_log_directory_fails_in_one_line_before_training(tmp_path, tiny_model_dir, synth_dir):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    overrides = {"trainer.max_steps": 6, "trainer.logger.init_args.save_dir": str(blocker / "logs")}
    config, run = write_config(tmp_path, tiny_model_dir, synth_dir, **EVERY_3, **overrides)
    res = train(config, check=False)
    err = res.stderr.strip().splitlines()
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert (
        err[-1].startswith("train.py: error: trainer.logger (TensorBoardLogger) save_dir") and "a-file/logs" in err[-1]
    )


def test_unwritable_checkpoint_directory_fails_in_one_line_before_training(tmp_path, tiny_model_dir, synth_dir):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    config, run = write_config(
        tmp_path,
        tiny_model_dir,
        synth_dir,
        **EVERY_3,
        **{"trainer.max_steps": 6, "trainer.callbacks.1.init_args.dirpath": str(blocker / "checkpoints")},
    )
    res = train(config, check=False)
    assert res.returncode == 2, res.stderr[-2000:]
    err = res.stderr.strip().splitlines()
    assert err[-1].startswith("train.py: error: checkpoint dirpath") and "a-file/checkpoints" in err[-1]
    assert "Traceback" not in res.stderr and not scalars(run, "train/loss")


# -- published outputs -------------------------------------------------------------------------------------------
_PUBLISH = """
import os, sys
from pathlib import Path
import vlat.io as io
kill_at, calls = int(sys.argv[2]), [0]
real = io._symlink_atomic
def hook(target, link):
    calls[0] += 1
    if calls[0] == kill_at:
        os._exit(137)  # SIGKILL-like: no cleanup runs
    real(target, link)
io._symlink_atomic = hook
if kill_at == 7:  # killed after the switch, while the old generation is removed
    io.shutil.rmtree = lambda *a, **k: os._exit(137)
with io.published_files(sys.argv[1]) as d:
    for name in ("a.txt", "b.txt", "c.txt"):
        (d / name).write_text("new " + name)
        if kill_at == 0 and name == "b.txt":
            os._exit(137)  # killed while writing the new set
"""


def _visible(out: Path) -> dict:
    return {p.name: p.read_text() for p in out.iterdir() if not p.name.startswith(".") and p.is_file()}


@pytest.mark.parametrize("before", ["published", "plain_files"])
def test_outputs_switch_all_at_once_whenever_the_job_is_killed(tmp_path, before):
    import subprocess
    import sys

    from vlat.io import published_files

    old = {"a.txt": "old a.txt", "b.txt": "old b.txt"}
    new = {n: f"new {n}" for n in ("a.txt", "b.txt", "c.txt")}
    outcomes = set()
    for kill_at in range(8):
        out = tmp_path / f"{before}-{kill_at}"
        if before == "published":
            with published_files(out) as d:
                for n, text in old.items():
                    (d / n).write_text(text)
        else:  # outputs of an earlier version: plain files
            out.mkdir()
            for n, text in old.items():
                (out / n).write_text(text)
        (out / "runs").mkdir()  # other content (compare.py's runs) is never touched
        res = subprocess.run([sys.executable, "-c", _PUBLISH, str(out), str(kill_at)], capture_output=True, text=True)
        assert res.returncode in (0, 137), res.stderr
        seen = _visible(out)
        assert seen in (old, new), (kill_at, seen)
        assert (out / "runs").is_dir() and not list(out.glob("*.partial"))
        outcomes.add((res.returncode, seen == new))
        with published_files(out) as d:  # the next job publishes cleanly and clears what the killed one left
            (d / "a.txt").write_text("next")
        assert _visible(out)["a.txt"] == "next" and [p.is_dir() for p in out.glob(".gen-*")] == [True]
    assert outcomes == {(137, False), (137, True), (0, True)}  # killed before and after the switch, and not killed


_CONCURRENT = """
import random, sys, time
import vlat.io as io
out, job = sys.argv[1], int(sys.argv[2])
for round in range(6):
    with io.published_files(out) as d:
        for name in ("results.json", "results.md"):
            (d / name).write_text(f"job {job} round {round}")
            time.sleep(random.random() * 0.02)
"""


def test_concurrent_publishes_into_one_output_never_break_each_other(tmp_path):
    """Six jobs publishing into one output at once, six times each: every publish succeeds, the final set is one
    job's whole set, and no generation is left behind."""
    import subprocess
    import sys

    out = tmp_path / "out"
    jobs = [
        subprocess.Popen([sys.executable, "-c", _CONCURRENT, str(out), str(j)], stderr=subprocess.PIPE, text=True)
        for j in range(6)
    ]
    errors = [p.communicate()[1] for p in jobs]
    assert [p.returncode for p in jobs] == [0] * 6, errors
    seen = _visible(out)
    assert set(seen) == {"results.json", "results.md"} and len(set(seen.values())) == 1
    assert [p.is_dir() for p in out.glob(".gen-*")] == [True]
    assert any("another job published here while this one ran" in e for e in errors)


def test_staging_left_by_a_killed_build_is_removed_by_the_next(tmp_path):
    """A fixture build killed mid-way left ``.base-model.<pid>.<random>/``: the next build of the same destination
    removes it (its process is gone), and never one of a live process."""
    import subprocess
    import sys

    from vlat.io import make_staging_dir, publish_dir

    dest = tmp_path / ".smoke" / "base-model"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = dest.parent / f".base-model.{int(dead.stdout)}.abc123"
    live = dest.parent / f".base-model.{os.getppid()}.def456"
    for d in (left, live):
        (d / "partial").mkdir(parents=True)
    staging = make_staging_dir(dest)
    (staging / "config.json").write_text("{}")
    publish_dir(staging, dest)
    assert not left.exists() and live.exists() and (dest / "config.json").exists()


def test_outputs_publish_into_a_mount_point():
    shm = Path("/dev/shm")
    if not (os.path.ismount(shm) and os.access(shm, os.W_OK)):
        pytest.skip("no writable mount point")
    from vlat.io import check_output_dir, published_files

    name = f"vlat-test-{os.getpid()}.txt"
    try:
        check_output_dir(shm)
        with published_files(shm) as d:  # staged inside the mount, not in its parent (another filesystem)
            (d / name).write_text("ok")
        assert (shm / name).read_text() == "ok"
    finally:
        gen = os.readlink(shm / ".current") if (shm / ".current").is_symlink() else None
        for p in (shm / name, shm / ".current"):
            p.unlink(missing_ok=True)
        if gen:
            shutil.rmtree(shm / gen, ignore_errors=True)


def _evaluate(*args):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(root / "evaluate.py"), *map(str, args), "--no-progress"]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=root)


@pytest.fixture(scope="module")
def unloadable_model(tiny_model_dir, tmp_path_factory):
    """The tiny model's config and processor with corrupt weights: any error about the config must come first."""
    d = tmp_path_factory.mktemp("unloadable") / "model"
    shutil.copytree(tiny_model_dir, d)
    for w in d.glob("*.safetensors"):
        w.write_bytes(b"not safetensors")
    return d


@pytest.mark.parametrize("case", ["output_is_a_file", "output_under_a_file", "cutoff_dim", "missing_model"])
def test_evaluate_checks_output_and_settings_before_the_model_loads(case, tmp_path, unloadable_model, synth_dir):
    (tmp_path / "f").write_text("a file\n")
    args = {"--model": unloadable_model, "--data": synth_dir, "--output": tmp_path / "out", "--lengths": "0.5"}
    expect = {
        "output_is_a_file": "is not a directory",
        "output_under_a_file": "cannot write there",
        "cutoff_dim": "cutoff_dim: 99 is outside [0, ",
        "missing_model": "no such directory",
    }[case]
    if case == "output_is_a_file":
        args["--output"] = tmp_path / "f"
    elif case == "output_under_a_file":
        args["--output"] = tmp_path / "f" / "out"
    elif case == "cutoff_dim":
        args.update({"--methods": "partial_yarn", "--cutoff-dim": "99"})
    else:
        args["--model"] = tmp_path / "no-model"
    res = _evaluate(*[x for kv in args.items() for x in kv])
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evaluate.py: error:") and expect in lines[0], res.stderr


def test_evaluate_prints_the_table_when_the_output_cannot_be_written(
    tmp_path, tiny_model_dir, synth_dir, monkeypatch, capsys
):
    import errno
    import importlib.util

    import vlat.evaluation

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(vlat.evaluation, "write_outputs", full_disk)
    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("evaluate_cli", root / "evaluate.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = tmp_path / "out"
    rc = cli.main(
        ["--model", str(tiny_model_dir), "--data", str(synth_dir), "--output", str(out)]
        + ["--lengths", "0.5", "--max-questions", "3", "--no-progress"]
    )
    captured = capsys.readouterr()
    assert rc == 1 and captured.out.startswith("Accuracy (%) [95% interval")  # the tables, printed first
    assert "| model | vanilla · 0.5 min" in captured.out
    assert captured.err.strip().splitlines()[-1] == (
        f"evaluate.py: error: --output {out}: results not written (No space left on device)"
    )
    assert not out.exists()  # checked early, created only to publish


# -- configuration mistakes: one line, exit 2, before the model loads ---------------------------------------------
@pytest.mark.parametrize(
    "override, expect",
    [
        ({"model.cutoff_dim": 99, "model.rope_method": "partial_yarn"}, "model.cutoff_dim: 99 is outside [0, "),
        ({"model.temperature": 0.0, "model.rope_method": "partial_yarn"}, "model.temperature: 0.0 must be > 0"),
        ({"model.lora_rank": 0}, "model.lora_rank: 0 must be an integer >= 1"),
        ({"model.learning_rate": 0.0}, "model.learning_rate: 0.0 must be > 0"),
        ({"trainer.callbacks.0.init_args.strategy": "custom"}, "factors: custom strategy needs"),
        ({"model.rope_method": "vanilla"}, "rope_method: VLAT needs an audio RoPE method"),
        ({"model.model_name_or_path": "tests/no-such-model"}, "tests/no-such-model: no such directory"),
        ({"data.source": "tests/no-such-data"}, "tests/no-such-data: no such file or directory"),
        ({"data.max_audio_seconds": 0}, "data.max_audio_seconds: 0.0 must be > 0"),
        ({"model.activation_memory_gib": -1}, "model.activation_memory_gib: -1.0 must be > 0"),
        pytest.param(
            {"model.fused_kernels": "on"},
            "model.fused_kernels: on needs a CUDA device",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only machines refuse fused kernels"),
        ),
    ],
    ids=[
        "cutoff_dim",
        "temperature",
        "lora_rank",
        "learning_rate",
        "custom_no_factors",
        "vanilla_vlat",
        "missing_model",
        "missing_data",
        "max_audio_seconds",
        "activation_memory",
        "fused_kernels_on_cpu",
    ],
)
def test_config_mistakes_fail_in_one_line_before_the_model_loads(
    tmp_path, unloadable_model, synth_dir, override, expect
):
    config, run = write_config(tmp_path, unloadable_model, synth_dir, **EVERY_3, **override)
    res = train(config, check=False)
    assert res.returncode == 2, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error: ") and expect in last, res.stderr[-3000:]
    assert "Traceback" not in res.stderr


def test_a_run_that_trains_on_no_data_fails_in_one_line(tmp_path, tiny_model_dir, synth_dir):
    config, run = write_config(tmp_path, tiny_model_dir, synth_dir, **EVERY_3, **{"data.train_lengths": [10.0]})
    res = train(config, check=False)
    assert res.returncode == 2, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error: data: no usable training sample in data pass 0"), last
    assert "Traceback" not in res.stderr


# -- skip counters ---------------------------------------------------------------------------------------------------
def _bad_shard(path: Path, wave, rows: list[tuple]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "audio_array": pa.array([r[0] for r in rows], type=pa.list_(pa.float32())),
            "sampling_rate": pa.array([16000] * len(rows), type=pa.int64()),
            "question": pa.array([r[1] for r in rows], type=pa.string()),
            "label": [r[2] for r in rows],
        }
    )
    pq.write_table(table, path, row_group_size=2)


def test_skip_counts_are_exact_per_reason_summed_over_ddp_ranks(tmp_path, tiny_model_dir, yodas2_dir):
    """Known bad rows in the published layout, 2-rank gloo DDP x 2 workers, one epoch: every reason counted once,
    over both ranks, training and validation apart."""
    from vlat.data import ColumnMapping, normalize, read_rows, resolve

    data = tmp_path / "data"
    shutil.copytree(yodas2_dir, data)
    src = resolve(str(data), "train")
    wave = normalize(next(read_rows(src, src.units[0])), ColumnMapping(), None).audio[0][: 16000 * 20]
    opts = "\n(1) a\n(2) b\n(3) c\n(4) d"
    train_bad = [
        ([], "Q?" + opts, "1"),  # empty_audio
        ([0.1, float("nan")] * 8000, "Q?" + opts, "2"),  # nan_audio
        ([0.2, float("nan")] * 8000, "Q?" + opts, "2"),  # nan_audio
        (wave, "Q? (1) a (2) b", "1"),  # bad_options
        (wave, "Q?" + opts, "0"),  # bad_answer
        (wave, "Q?" + opts, "7"),  # bad_answer
        (wave, None, "1"),  # missing_field
    ]
    test_bad = [(wave, "Q?" + opts, "9"), ([], "Q?" + opts, "1")]  # bad_answer, empty_audio
    _bad_shard(data / "0.5" / "train-00009-of-00009.parquet", wave, train_bad)
    _bad_shard(data / "0.5" / "test-00009-of-00009.parquet", wave, test_bad)
    config, run = write_config(tmp_path, tiny_model_dir, data, workers=2, **DDP_ONE_EPOCH, **{"data.val_lengths": None})
    res = train(config)

    def final(tag):
        values = scalars(run, tag)
        return values[max(values)] if values else None

    want_train = {"empty_audio": 1, "nan_audio": 2, "bad_options": 1, "bad_answer": 2, "missing_field": 1}
    for reason, n in want_train.items():
        assert final(f"data/skipped/{reason}") == n, reason
    assert final("data/skipped_total") == 7 and final("data/skipped/too_long") is None
    assert final("val/skipped/bad_answer") == 1 and final("val/skipped/empty_audio") == 1
    assert final("val/skipped_total") == 2  # the training counter is not cleared by validation, nor mixed into it
    assert "skipped 7 bad samples in epoch 0" in res.stderr + res.stdout


# -- non-finite losses -----------------------------------------------------------------------------------------------
def test_a_non_finite_batch_is_skipped_counted_and_named(tmp_path, tiny_model_dir, synth_dir):
    config, run = write_config(tmp_path, tiny_model_dir, synth_dir, **EVERY_3, **{"trainer.max_steps": 6})
    res = train(with_callback(config, "tests.faults.NaNFeaturesAt", at=[2]))
    warning = next(line for line in res.stderr.splitlines() if "skipping a batch with a non-finite" in line)
    assert "global step 2 (samples: " in warning and "q" in warning.split("samples: ")[1]  # question ids
    assert scalars(run, "data/skipped/nonfinite_loss")[5] == 4  # the batch's 4 samples
    assert all(v == v for v in scalars(run, "train/loss").values())  # no NaN reached the logs (or the weights)
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 6 and all(torch.isfinite(v).all() for v in state["state_dict"].values())


def test_non_finite_batches_in_a_row_stop_the_run_naming_samples(tmp_path, tiny_model_dir, synth_dir):
    config, run = write_config(tmp_path, tiny_model_dir, synth_dir, **EVERY_3, **{"trainer.max_steps": 8})
    res = train(with_callback(config, "tests.faults.NaNFeaturesAt", at=[4, 5, 6]), check=False)
    assert res.returncode != 0
    assert "3 batches in a row: stopping" in res.stderr and "global step 6 (samples: " in res.stderr
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)  # what was written is intact, finite
    assert state["global_step"] <= 6 and all(torch.isfinite(v).all() for v in state["state_dict"].values())


def test_evaluation_skips_and_counts_rows_it_cannot_score(synth_dir, tmp_path):
    """An answer outside the options or three options: skipped and counted by reason, not scored as wrong."""
    import json

    from vlat.evaluation import EvalSpec
    from vlat.evaluation.runner import open_source, recordings

    d = tmp_path / "data"
    shutil.copytree(synth_dir, d)
    rows = [json.loads(x) for x in (d / "test.jsonl").read_text().splitlines()]
    rows[0]["answer"], rows[1]["choices"] = 7, rows[1]["choices"][:3]
    (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = EvalSpec(model="unused", data=str(d), lengths=[0.5, 1.25])
    skipped = []
    kept = [r.id for group in recordings(spec, open_source(spec), lambda e: skipped.append(e.reason)) for r in group]
    assert sorted(skipped) == ["bad_answer", "bad_options"] and len(kept) == len(rows) - 2
    assert rows[0]["id"] not in kept and rows[1]["id"] not in kept


def test_evaluation_names_every_skip_applies_the_length_limit_and_keeps_results_when_nothing_scores(
    synth_dir, tiny_model_dir, tmp_path, monkeypatch
):
    """The 30-s recording's audio is a symlink loop, the 75-s one is over --max-audio-seconds 60: every question is
    named with its reason and counted per reason; the over-long one is rejected from its header (never decoded).
    With nothing scorable the run exits 1 and the previous results stay."""
    import json

    import soundfile as sf

    d = tmp_path / "data"
    shutil.copytree(synth_dir, d)
    rows = [json.loads(x) for x in (d / "test.jsonl").read_text().splitlines()]
    short = [r for r in rows if r["duration"] == 30.0]
    (d / "audio" / "loop_a").symlink_to("loop_b")
    (d / "audio" / "loop_b").symlink_to("loop_a")
    for r in short:
        r["audio"] = "audio/loop_a"
    (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    ok = _evaluate("--model", tiny_model_dir, "--data", synth_dir, "--methods", "vanilla", "--output", out)
    assert ok.returncode == 0, ok.stderr[-2000:]
    before = (out / "results.json").read_bytes()

    res = _evaluate("--model", tiny_model_dir, "--data", d, "--methods", "vanilla", "--max-audio-seconds", 60,
                    "--output", out)  # fmt: skip
    assert res.returncode == 1 and "no question could be scored" in res.stderr, res.stderr[-2000:]
    assert f"skipped {len(rows)} questions (missing_audio: {len(short)}, too_long: {len(rows) - len(short)})" in (
        res.stderr
    )
    assert "Too many levels of symbolic links" in res.stderr and "over max_audio_seconds=60" in res.stderr
    assert (out / "results.json").read_bytes() == before  # nothing replaced

    # in process: the over-long recording is never decoded, the loop is named, both counted per reason
    from vlat.evaluation.runner import EvalSpec, open_source, recordings

    decoded = []
    real_read = sf.read
    monkeypatch.setattr(sf, "read", lambda f, *a, **k: decoded.append(str(f)) or real_read(f, *a, **k))
    spec = EvalSpec(model="unused", data=str(d), max_audio_seconds=60)
    skipped = []
    kept = [r for g in recordings(spec, open_source(spec), lambda e: skipped.append((e.sample, e.reason))) for r in g]
    want = {r["id"]: "missing_audio" if r in short else "too_long" for r in rows}
    assert len(skipped) == len(rows)
    for sample, reason in skipped:  # a bad row is named by file, row and id; an over-long one by its id
        [rid] = [i for i in want if i in sample]
        assert reason == want.pop(rid)
    assert not kept and not decoded


def test_evaluate_checks_max_questions_before_the_model_loads(tmp_path, unloadable_model, synth_dir):
    for value in ("0", "-1"):
        res = _evaluate(
            "--model", unloadable_model, "--data", synth_dir, "--max-questions", value, "--output", tmp_path
        )
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr[-2000:]
        assert "--max-questions" in res.stderr and "must be an integer >= 1" in res.stderr


def test_compare_checks_methods_and_output_before_training(tmp_path, tiny_model_dir):
    import subprocess
    import sys

    import yaml

    root = Path(__file__).resolve().parents[1]
    base = yaml.safe_load((root / "configs" / "smoke.yaml").read_text())
    base["model"]["model_name_or_path"] = str(tiny_model_dir)
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "f").write_text("a file\n")
    for extra, expect in (
        (["--methods", "vanilla,yarn", "--output", str(tmp_path / "out")], "--methods: ['yarn']"),
        (["--output", str(tmp_path / "f")], "is not a directory"),
    ):
        cmd = [sys.executable, str(root / "compare.py"), "--base-config", str(tmp_path / "base.yaml"), *extra]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
        assert res.returncode == 2 and expect in res.stderr.strip().splitlines()[-1], res.stderr[-2000:]
        assert not (tmp_path / "out").exists()  # no run was trained


def test_evaluate_warns_about_length_buckets_that_received_no_question(tmp_path, tiny_model_dir, synth_dir):
    common = ["--model", tiny_model_dir, "--data", synth_dir, "--output", tmp_path / "out"]
    res = _evaluate(*common, "--lengths", "0.5,5")  # the data's recordings last 30 s and 75 s
    rows = [json.loads(x) for x in (Path(synth_dir) / "test.jsonl").read_text().splitlines()]
    n = sum(r["duration"] == 75.0 for r in rows)  # the test split's questions about 75-s recordings
    assert n == 2 * len(QUESTIONS)  # two recordings
    assert res.returncode == 0, res.stderr[-2000:]
    warnings = [line for line in res.stderr.splitlines() if line.startswith("evaluate.py: warning:")]
    assert warnings == [
        "evaluate.py: warning: the 5-min bucket received no question (no recording is within 10% of that length)"
    ]
    assert (
        f"evaluate.py: left out {n} questions whose recordings are in no requested length bucket (75 s: {n})"
        in res.stderr
    )
    res = _evaluate(*common, "--lengths", "0.5,1.25", "--max-questions", "2")
    warnings = [line for line in res.stderr.splitlines() if line.startswith("evaluate.py: warning:")]
    assert res.returncode == 0 and len(warnings) == 1 and "(--max-questions 2 was reached first)" in warnings[0]
