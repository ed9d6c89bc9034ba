"""Integrity: interrupted and failed checkpoint saves, resume from the newest complete state, the adapter saved with
a checkpoint, unwritable places found before the model loads."""

import os
import shutil
from pathlib import Path

import pytest
import torch
from test_train import scalars, train, write_config

from vlat.checkpointing import ADAPTER_KEY, newest_checkpoint
from vlat.cli import resolve_ckpt_path
from vlat.errors import ConfigError
from vlat.evaluation.runner import resolve_adapters, split_label

EVERY_3 = {"trainer.limit_val_batches": 0, "trainer.callbacks.1.init_args.every_n_train_steps": 3}


def _with_fault(config: Path, at: int, how: str) -> None:
    import yaml

    cfg = yaml.safe_load(config.read_text())
    cfg["trainer"]["callbacks"].append({"class_path": "tests.faults.FailSave", "init_args": {"at": at, "how": how}})
    config.write_text(yaml.safe_dump(cfg))


def _complete(path: Path) -> int:
    return int(torch.load(path, weights_only=False)["global_step"])


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
    _with_fault(config, at=4, how="kill")
    env = _other_filesystem_tmpdir(tmp_path)
    res = train(config, check=False, env=env)
    assert res.returncode == -9, res.stderr[-2000:]
    ckpts = run / "checkpoints"
    assert _complete(ckpts / "last.ckpt") == 3  # the old last.ckpt is intact, not a 0-byte file
    assert _complete(ckpts / "epoch=0-step=6.ckpt") == 6
    assert [p.name for p in ckpts.iterdir() if p.name.endswith(".partial")]  # the torn write kept a hidden name
    if env.get("TMPDIR"):
        assert not list(Path(env["TMPDIR"]).iterdir())  # nothing staged in $TMPDIR
        shutil.rmtree(env["TMPDIR"])

    _with_fault(config, at=0, how="kill")  # no more faults
    res = train(config, "--trainer.max_steps", "8", "--ckpt_path", "last")
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
    _with_fault(config, at=3, how="enospc")  # the step-6 checkpoint
    res = train(config, check=False)
    assert res.returncode != 0 and "No space left on device" in res.stderr
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
    ckpt = torch.load(ckpts / "last.ckpt", weights_only=False)
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
    assert step6.read_bytes() == torch.load(ckpts / "epoch=0-step=6.ckpt", weights_only=False)[ADAPTER_KEY][step6.name]


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
