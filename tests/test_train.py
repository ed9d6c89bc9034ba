"""train.py end to end on the tiny offline model + synthetic data: files written, loss, resume, DDP, configs."""

import glob
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def write_config(tmp_path, tiny_model_dir, synth_dir, workers=0, **overrides):
    cfg = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    run = tmp_path / "run"
    cfg["trainer"].update(default_root_dir=str(run), log_every_n_steps=1, limit_val_batches=2)
    cfg["trainer"]["logger"]["init_args"]["save_dir"] = str(run)
    ckpt = next(c for c in cfg["trainer"]["callbacks"] if c["class_path"].endswith("AdapterCheckpoint"))
    ckpt["init_args"]["dirpath"] = str(run / "checkpoints")
    cfg["model"]["model_name_or_path"] = str(tiny_model_dir)
    folders = (Path(synth_dir) / "0.5").is_dir()  # the published layout: clip-length folders 0.5 and 1
    cfg["data"].update(source=str(synth_dir), num_workers=workers, val_lengths=[0.5, 1.0] if folders else [0.5, 1.25])
    for dotted, value in overrides.items():
        *path, key = dotted.split(".")
        node = cfg
        for p in path:
            node = node[int(p)] if p.isdigit() else node[p]
        node[key] = value
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, run


def with_callback(config, class_path: str, **init_args):
    """A copy of ``config`` with one more callback (a test's recorder or fault), the original left as it was."""
    cfg = yaml.safe_load(config.read_text())
    cfg["trainer"]["callbacks"].append({"class_path": class_path, "init_args": init_args})
    out = config.with_name(f"{config.stem}.{class_path.rsplit('.', 1)[1]}.yaml")
    out.write_text(yaml.safe_dump(cfg))
    return out


# one finite epoch under 2-process gloo DDP, validated at its end
DDP_ONE_EPOCH = {
    "trainer.max_steps": -1,
    "trainer.max_epochs": 1,
    "trainer.val_check_interval": 1.0,
    "trainer.check_val_every_n_epoch": 1,
    "trainer.limit_val_batches": 1.0,
    "trainer.devices": 2,
    "trainer.strategy": "ddp",
    "data.infinite_train": False,
    "data.batch_size": 2,
    "data.val_batch_size": 3,
    "trainer.callbacks.1.init_args.every_n_train_steps": 100,
}


def train(config, *extra, check=True, env=None):
    res = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--config", str(config), *extra],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    if check:
        assert res.returncode == 0, res.stderr[-4000:]
    return res


def scalars(run, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for d in sorted(glob.glob(str(run / "tb" / "version_*"))):
        ea = EventAccumulator(d)
        ea.Reload()
        if tag in ea.Tags()["scalars"]:
            out.update({e.step: e.value for e in ea.Scalars(tag)})
    return out


def test_smoke_training_writes_events_adapter_and_learns(tmp_path, tiny_model_dir, yodas2_dir):
    # the published layout (parquet shards in clip-length folders, inline audio) with the shipped 2 workers
    config, run = write_config(
        tmp_path,
        tiny_model_dir,
        yodas2_dir,
        workers=2,
        **{
            "trainer.max_steps": 24,
            "trainer.val_check_interval": 12,
            "model.learning_rate": 0.02,
            "trainer.callbacks.1.init_args.every_n_train_steps": 12,
        },
    )
    res = train(config)
    factors = scalars(run, "vlat/virtual_factor")
    assert len(factors) == 24 and set(factors.values()) <= {1.0, 5.0, 10.0, 15.0, 20.0, 25.0}
    assert len(set(factors.values())) > 2
    loss = [v for _, v in sorted(scalars(run, "train/loss").items())]
    assert len(loss) == 24 and all(torch.isfinite(torch.tensor(loss))) and sum(loss[-4:]) / 4 < sum(loss[:4]) / 4 - 0.3
    assert set(scalars(run, "data/skipped_total").values()) == {0.0}  # no row of the real layout is skipped
    assert scalars(run, "val/acc_0_5min") and scalars(run, "val/acc_1min")
    assert scalars(run, "train/audio_tokens_per_s") and scalars(run, "lr-AdamW")
    assert (run / "tb" / "version_0" / "config.yaml").exists() or list(run.rglob("config.yaml"))
    # the run ends with what it learned: the last validation per bucket, with its counts and interval, and where
    # the checkpoints are (the accuracies are TensorBoard's final ones)
    out = [line for line in (res.stdout + res.stderr).splitlines() if line.startswith("[vlat]")]
    assert "[vlat] last validation (step 24), accuracy per length bucket [95% interval]:" in out
    questions = 0
    for key, minutes in (("0_5min", "0.5"), ("1min", "1")):
        acc = scalars(run, f"val/acc_{key}")[max(scalars(run, f"val/acc_{key}"))]
        [line] = [x for x in out if x.startswith(f"[vlat]   {minutes} min: ")]
        q, r = map(int, re.search(r"\((\d+) questions, (\d+) recordings\)", line).groups())
        assert f"{100 * acc:.1f}% [" in line and 1 <= r <= q, line
        questions += q
    batch = yaml.safe_load(config.read_text())["data"]["val_batch_size"]
    from vlat.data import read_rows, resolve

    src = resolve(str(yodas2_dir), "test")
    held_out = sum(1 for u in src.units for _ in read_rows(src, u))
    assert questions == min(2 * batch, held_out)  # limit_val_batches: at most 2 batches of the test split
    assert f"[vlat] checkpoints in {run / 'checkpoints'} (last {run / 'checkpoints' / 'last.ckpt'}" in "\n".join(out)

    # checkpoints hold LoRA weights only; the PEFT adapter beside them loads onto the stock base model
    ckpt = torch.load(run / "checkpoints" / "epoch=0-step=24.ckpt", weights_only=True)
    assert ckpt["state_dict"] and all("lora_" in k for k in ckpt["state_dict"])
    adapter = run / "checkpoints" / "epoch=0-step=24-adapter"
    assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
    from peft import PeftModel
    from transformers import Qwen2AudioForConditionalGeneration

    peft_model = PeftModel.from_pretrained(Qwen2AudioForConditionalGeneration.from_pretrained(tiny_model_dir), adapter)
    lora = {n: p for n, p in peft_model.named_parameters() if "lora_" in n}
    assert lora and not any("audio_tower" in n for n in lora)
    assert {n.split(".")[-4] for n in lora if "lora_A" in n} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    by_suffix = {k.split("language_model.", 1)[1]: v for k, v in ckpt["state_dict"].items()}
    for name, p in lora.items():
        torch.testing.assert_close(p.detach(), by_suffix[name.split("language_model.", 1)[1]])
    # it records the base model it was trained on (checked before an evaluation scores it)
    from vlat.training.adapter_record import base_fingerprint, read_record

    record = read_record(adapter)
    assert record["base_model"] == str(tiny_model_dir)
    assert record["base_fingerprint"] == base_fingerprint(
        Qwen2AudioForConditionalGeneration.from_pretrained(tiny_model_dir)
    )
    assert ckpt["vlat_adapter"]["vlat_adapter.json"] == (adapter / "vlat_adapter.json").read_bytes()
    # and how it was trained: the config's audio RoPE, window, compression and VLAT strategy
    model_cfg = yaml.safe_load(config.read_text())["model"]
    assert record["training"] == {
        "rope_method": model_cfg["rope_method"],
        "original_audio_seconds": model_cfg["original_audio_seconds"],
        "cutoff_dim": 0,
        "temperature": 1.0,
        "audio_compression": model_cfg["audio_compression"],
        "vlat": {"strategy": "default", "per_sample": False, "factors": 6},
    }


@pytest.mark.seam
def test_kill_and_resume_matches_uninterrupted(tmp_path, tiny_model_dir, synth_dir):
    common = {"trainer.limit_val_batches": 0, "trainer.callbacks.1.init_args.every_n_train_steps": 3}
    full_cfg, full_run = write_config(tmp_path / "a", tiny_model_dir, synth_dir, **common, **{"trainer.max_steps": 6})
    train(full_cfg)
    cut_cfg, cut_run = write_config(tmp_path / "b", tiny_model_dir, synth_dir, **common, **{"trainer.max_steps": 3})
    train(cut_cfg)
    res = train(cut_cfg, "--trainer.max_steps", "6", "--ckpt_path", str(cut_run / "checkpoints" / "last.ckpt"))
    assert re.search(r"step\s+\S+ 6/6 ", res.stdout) and "Epoch 0/" not in res.stdout  # steps of max_steps
    full, resumed = scalars(full_run, "train/loss"), scalars(cut_run, "train/loss")
    assert sorted(full) == sorted(resumed) == list(range(6))
    for step in (3, 4, 5):
        assert abs(full[step] - resumed[step]) < 1e-5, (step, full[step], resumed[step])
    assert scalars(full_run, "vlat/virtual_factor") == scalars(cut_run, "vlat/virtual_factor")


def _recorded(ids_dir: Path) -> dict:
    return json.loads((ids_dir / "rank0.json").read_text())


def test_resume_several_passes_in_continues_as_the_uninterrupted_run(tmp_path, tiny_model_dir, synth_dir):
    """32 training questions in batches of 4: 8 batches a pass. Cut at step 18 (pass 2), resume to 22: the resumed
    run trains on exactly the questions, in the order, and with the losses of the uninterrupted run."""
    common = {"trainer.limit_val_batches": 0, "trainer.callbacks.1.init_args.every_n_train_steps": 6}
    full_cfg, full_run = write_config(tmp_path / "a", tiny_model_dir, synth_dir, **common, **{"trainer.max_steps": 22})
    train(with_callback(full_cfg, "tests.id_recorder.RecordIds", out=str(tmp_path / "ids_a")))
    cut_cfg, cut_run = write_config(tmp_path / "b", tiny_model_dir, synth_dir, **common, **{"trainer.max_steps": 18})
    train(cut_cfg)
    assert torch.load(cut_run / "checkpoints" / "last.ckpt", weights_only=True)["vlat_data_pass"]["pass"] == 2
    resumed_cfg = with_callback(cut_cfg, "tests.id_recorder.RecordIds", out=str(tmp_path / "ids_b"))
    res = train(resumed_cfg, "--trainer.max_steps", "22", "--ckpt_path", "last")
    assert "no usable training sample" not in res.stderr
    full, resumed = _recorded(tmp_path / "ids_a"), _recorded(tmp_path / "ids_b")
    assert resumed["train"] and resumed["train"] == full["train"][-len(resumed["train"]) :]
    assert set(full["train_pass"]) == {0, 1, 2} and set(resumed["train_pass"]) == {2}
    full_loss, resumed_loss = scalars(full_run, "train/loss"), scalars(cut_run, "train/loss")
    for step in range(18, 22):
        assert abs(full_loss[step] - resumed_loss[step]) < 1e-5, (step, full_loss[step], resumed_loss[step])


def test_resume_under_another_worker_count_refuses_or_starts_the_next_pass(tmp_path, tiny_model_dir, synth_dir):
    common = {"trainer.limit_val_batches": 0, "trainer.callbacks.1.init_args.every_n_train_steps": 3}
    config, run = write_config(tmp_path, tiny_model_dir, synth_dir, workers=2, **common, **{"trainer.max_steps": 3})
    train(config)
    res = train(config, "--data.num_workers", "1", "--trainer.max_steps", "6", "--ckpt_path", "last", check=False)
    err = res.stderr.strip().splitlines()
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert err[-1].startswith("train.py: error: data: the checkpoint is 3 batches into a data pass")
    assert "num_workers 2 -> 1" in err[-1] and "--data.restart_pass true" in err[-1]
    # starting the next pass afresh: every question of it exactly once, under the new worker count
    ids = tmp_path / "ids"
    restarted = with_callback(config, "tests.id_recorder.RecordIds", out=str(ids))
    extra = ("--data.num_workers", "1", "--data.restart_pass", "true", "--trainer.max_steps", "11")
    train(restarted, *extra, "--ckpt_path", "last")
    seen = _recorded(ids)
    # the fixture's 32 training questions, each once
    assert set(seen["train_pass"]) == {1} and len(seen["train"]) == 32 and len(set(seen["train"])) == 32


def test_non_finite_loss_stops_with_clear_error(tmp_path, tiny_model_dir, synth_dir):
    config, run = write_config(
        tmp_path,
        tiny_model_dir,
        synth_dir,
        **{
            "trainer.max_steps": 6,
            "trainer.limit_val_batches": 0,
            "model.learning_rate": 1e30,
            "trainer.gradient_clip_val": None,
            "trainer.callbacks.1.init_args.every_n_train_steps": 1,
        },
    )
    res = train(config, check=False)
    assert res.returncode != 0 and "non-finite" in res.stderr
    kept = sorted(run.glob("checkpoints/epoch=0-step=*.ckpt"))
    assert kept, "the checkpoint written before the failure must remain"
    for path in kept:  # every checkpoint written is complete and finite
        state = torch.load(path, weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values())


def test_two_process_ddp_on_cpu(tmp_path, tiny_model_dir, synth_dir):
    config, run = write_config(
        tmp_path,
        tiny_model_dir,
        synth_dir,
        **{
            "trainer.max_steps": 3,
            "trainer.limit_val_batches": 0,
            "trainer.devices": 2,
            "trainer.strategy": "ddp",
            "trainer.callbacks.1.init_args.every_n_train_steps": 3,
        },
    )
    res = train(config)
    out = res.stderr + res.stdout
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in out and "distributed_backend=gloo" in out
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3 and ckpt["YODAS2MCQADataModule"]["plans_consumed"] == 3


def test_ddp_epoch_with_workers_sees_every_question_once(tmp_path, tiny_model_dir, yodas2_dir):
    """2-process gloo DDP x 2 DataLoader workers per rank, one finite epoch: the ids trained and validated on, over
    both ranks, are exactly the dataset's questions."""
    from vlat.data import ColumnMapping, normalize, read_rows, resolve

    ids_dir = tmp_path / "ids"
    config, run = write_config(tmp_path, tiny_model_dir, yodas2_dir, workers=2, **DDP_ONE_EPOCH)
    config = with_callback(config, "tests.id_recorder.RecordIds", out=str(ids_dir))
    train(config)
    seen = {"train": [], "val": [], "train_audio_tokens": [], "train_pass": []}
    for path in ids_dir.glob("rank*.json"):
        for k, v in json.loads(path.read_text()).items():
            seen[k] += v
    for split, key in (("train", "train"), ("test", "val")):
        src = resolve(str(yodas2_dir), split)
        want = sorted(normalize(r, ColumnMapping(), None).id for u in src.units for r in read_rows(src, u))
        assert sorted(seen[key]) == want, key
    assert len(list(ids_dir.glob("rank*.json"))) == 2


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_parses(config, tmp_path, monkeypatch, tiny_model_dir):
    from vlat.data import YODAS2MCQADataModule
    from vlat.training.cli import VLATCLI
    from vlat.training.module import VLATModule
    from vlat.training.vlat_callback import VirtualLongformCallback

    monkeypatch.chdir(tmp_path)
    (tmp_path / ".smoke").mkdir()
    (tmp_path / ".smoke" / "base-model").symlink_to(tiny_model_dir)  # a local model path must exist (checked early)
    cli = VLATCLI(
        VLATModule,
        YODAS2MCQADataModule,
        run=False,
        args=["--config", str(config), "--trainer.accelerator", "cpu", "--trainer.devices", "1"],
    )
    assert cli.model.hparams.model_name_or_path == cli.datamodule.hparams.model_name_or_path
    vlat = [c for c in cli.trainer.callbacks if isinstance(c, VirtualLongformCallback)]
    name = config.stem
    if name.startswith("vlat_"):
        assert len(vlat) == 1 and vlat[0].strategy == name.removeprefix("vlat_")
    elif name == "vanilla_ft":
        assert not vlat and cli.model.hparams.rope_method == "vanilla"
    text = config.read_text()
    for line in text.splitlines():  # every key is commented
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", "- class_path", "class_path", "init_args")) and ":" in stripped:
            if not stripped.endswith(":"):
                assert "#" in stripped, f"{config.name}: uncommented key: {stripped}"


def test_training_on_compressed_audio(tmp_path, tiny_model_dir, synth_dir):
    """model.audio_compression reaches the data (linked): prompts hold the pooled counts (30 s: 750 -> 375;
    75 s: 750 + 750 + 375 -> 375 + 375 + 188) and LoRA trains and validates on them."""
    ids_dir = tmp_path / "ids"
    config, run = write_config(  # the shipped 2 DataLoader workers: the setting reaches them
        tmp_path,
        tiny_model_dir,
        synth_dir,
        workers=2,
        **{
            "trainer.max_steps": 4,
            "trainer.val_check_interval": 4,
            "model.audio_compression": "pool:2",
            "trainer.callbacks.1.init_args.every_n_train_steps": 4,
        },
    )
    train(with_callback(config, "tests.id_recorder.RecordIds", out=str(ids_dir)))
    seen = json.loads((ids_dir / "rank0.json").read_text())
    assert set(seen["train_audio_tokens"]) == {375, 938}
    loss = scalars(run, "train/loss")
    assert len(loss) == 4 and all(torch.isfinite(torch.tensor(list(loss.values()))))
    assert scalars(run, "val/acc_0_5min") and scalars(run, "val/acc_1_25min")  # the 75-s recordings
    saved = yaml.safe_load(next(run.rglob("config.yaml")).read_text())  # the data side is linked, not saved
    assert saved["model"]["audio_compression"] == "pool:2"
    assert (run / "checkpoints" / "epoch=0-step=4-adapter" / "adapter_model.safetensors").exists()

    bad, _ = write_config(tmp_path / "bad", tiny_model_dir, synth_dir, **{"model.audio_compression": "pool:1"})
    res = train(bad, check=False)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("train.py: error: model.audio_compression: 'pool:1'")


def test_a_config_naming_a_moved_class_is_one_line(tmp_path):
    """Configs written before the modules were grouped name vlat.vlat_callback / vlat.checkpointing: one line saying
    where the class is now, before anything loads."""
    old = (ROOT / "configs" / "smoke.yaml").read_text().replace("vlat.training.checkpointing.", "vlat.checkpointing.")
    (tmp_path / "old.yaml").write_text(old)
    res = train(tmp_path / "old.yaml", check=False)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"train.py: error: config {tmp_path / 'old.yaml'}: class_path vlat.checkpointing.AdapterCheckpoint is now "
        "vlat.training.checkpointing.AdapterCheckpoint (edit the file)"
    ]
