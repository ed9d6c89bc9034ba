"""Shared offline fixtures: the tiny random Qwen2-Audio checkpoint and the synthetic MCQA dataset, built once."""

from __future__ import annotations

import pytest
import torch

from vlat.testing import SynthConfig, write_synth_dataset, write_tiny_model


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    cfg = SynthConfig(durations=(30.0, 75.0), videos_per_duration=10, segments_per_video=1, seed=0)
    return write_synth_dataset(tmp_path_factory.mktemp("synth") / "data", cfg)


@pytest.fixture(scope="session")
def yodas2_dir(tmp_path_factory):
    """A local mirror in the published YODAS2-MCQA layout: 0.5/ and 1/ folders, 2 parquet shards per split, row
    groups of 3 rows (a recording's two questions can straddle them), inline audio, no id/video/duration column."""
    cfg = SynthConfig(
        durations=(30.0, 60.0), videos_per_duration=4, segments_per_video=1, seed=1, layout="yodas2", row_group_rows=3
    )
    return write_synth_dataset(tmp_path_factory.mktemp("yodas2") / "mirror", cfg)


@pytest.fixture(scope="session")
def yodas2_one_file(tmp_path_factory):
    """The same layout as one folder holding one parquet file of one row group per split."""
    cfg = SynthConfig(
        durations=(30.0,),
        videos_per_duration=4,
        segments_per_video=1,
        seed=2,
        layout="yodas2",
        shards=1,
        row_group_rows=1000,
    )
    return write_synth_dataset(tmp_path_factory.mktemp("yodas2one") / "mirror", cfg)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from transformers import Qwen2AudioForConditionalGeneration

    return Qwen2AudioForConditionalGeneration.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(scope="session")
def tiny_af3_model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny-af3") / "model", family="audioflamingo3")


@pytest.fixture(scope="session")
def tiny_af3_model(tiny_af3_model_dir):
    from transformers import AudioFlamingo3ForConditionalGeneration

    return AudioFlamingo3ForConditionalGeneration.from_pretrained(tiny_af3_model_dir).eval()


@pytest.fixture(scope="session")
def tiny_voxtral_model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny-voxtral") / "model", family="voxtral")


@pytest.fixture(scope="session")
def tiny_voxtral_model(tiny_voxtral_model_dir):
    from transformers import VoxtralForConditionalGeneration

    return VoxtralForConditionalGeneration.from_pretrained(tiny_voxtral_model_dir).eval()


@pytest.fixture(scope="session")
def processor(tiny_model_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def quick_start(tmp_path_factory):
    """The README's quick start, run as written in a fresh directory: ``python -m vlat.testing smoke .smoke`` (the
    base model is trained here, about 8 minutes on 2 cores) then ``python train.py --config configs/smoke.yaml``.
    Its tests, and the miniature's built on it, are marked ``slow``: CI runs them as a step of their own."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cwd = tmp_path_factory.mktemp("quick_start")
    for cmd in (
        ["-m", "vlat.testing", "smoke", ".smoke"],
        [str(root / "train.py"), "--config", str(root / "configs" / "smoke.yaml")],
    ):
        res = subprocess.run([sys.executable, *cmd], cwd=cwd, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-4000:]
    return cwd
