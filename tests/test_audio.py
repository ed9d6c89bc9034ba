import io

import numpy as np
import pytest
import soundfile as sf
import torch

from vlat.audio.decode import audio_tokens_for_frames, featurize, load_audio, seconds_to_tokens, tokens_per_second
from vlat.errors import BadSampleError


def _tone(freq, seconds, rate):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(wav, rate):
    spec = np.abs(np.fft.rfft(wav))
    return np.argmax(spec) * rate / len(wav)


def test_stereo_22k_file_is_downmixed_and_resampled(tmp_path):
    left, right = _tone(440, 75, 22050), np.zeros(int(75 * 22050), dtype=np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 22050)
    wav = load_audio(path)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) - 75 * 16000) <= 1
    assert abs(_peak_hz(wav, 16000) - 440) < 1.0  # a real resampler keeps the pitch
    assert abs(np.abs(wav[16000:-16000]).max() - 0.15) < 0.01  # mono = mean of channels: 0.3 / 2


@pytest.mark.parametrize("fmt,subtype", [("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")])
def test_encoded_bytes_and_dataset_dicts(fmt, subtype):
    if fmt not in sf.available_formats():
        pytest.skip(f"libsndfile here cannot write {fmt}")
    buf = io.BytesIO()
    sf.write(buf, _tone(1000, 2, 16000), 16000, format=fmt, subtype=subtype)
    for src in (buf.getvalue(), {"bytes": buf.getvalue(), "path": "clip"}):
        wav = load_audio(src)
        assert abs(len(wav) - 32000) < 2000  # lossy codecs add/trim a few frames
        assert abs(_peak_hz(wav, 16000) - 1000) < 2.0


def test_array_and_rate_pair():
    wav = load_audio((_tone(300, 1, 8000), 8000))
    assert len(wav) == 16000 and abs(_peak_hz(wav, 16000) - 300) < 2.0


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda p: p.write_bytes(b"RIFF\x00\x00garbage" * 10), "corrupt_audio"),
        (lambda p: sf.write(p, np.zeros(0, dtype=np.float32), 16000), "empty_audio"),
        (lambda p: sf.write(p, np.full(1600, np.nan, dtype=np.float32), 16000, subtype="FLOAT"), "nan_audio"),
        (lambda p: sf.write(p, _tone(440, 3, 16000), 16000), "too_long"),
        (lambda p: None, "missing_audio"),
    ],
)
def test_bad_audio_names_the_file_and_reason(tmp_path, make, reason):
    path = tmp_path / "bad_clip.wav"
    make(path)
    with pytest.raises(BadSampleError) as err:
        load_audio(path, max_seconds=2.0)
    assert err.value.reason == reason
    assert "bad_clip.wav" in str(err.value)


def test_features_equal_the_extractors_own_call_on_all_windows(processor):
    """featurize runs the extractor one window at a time; Hugging Face's one call on every window gives the same
    features (each window is normalised by its own maximum), including a quiet window and a partial last one."""
    fe = processor.feature_extractor
    rng = np.random.default_rng(0)
    wav = np.concatenate([_tone(440, 30, 16000), 0.001 * _tone(880, 30, 16000), rng.normal(0, 0.1, 12 * 16000)])
    wav = wav.astype(np.float32)
    feats, mask = featurize(wav, fe)
    window = fe.n_samples
    ref = fe(
        [wav[i : i + window] for i in range(0, len(wav), window)],
        sampling_rate=16000,
        padding="max_length",
        return_attention_mask=True,
        return_tensors="pt",
    )
    assert feats.shape == ref["input_features"].shape == (3, 128, 3000)
    assert torch.equal(feats, ref["input_features"])
    assert torch.equal(mask, ref["attention_mask"].long()) and mask.dtype == torch.long
    assert torch.equal(feats[1:2], featurize(wav[window : 2 * window], fe)[0])  # windows are independent
    assert mask.sum(-1).tolist() == [3000, 3000, 1200]


def test_windows_follow_the_feature_extractor(processor):
    fe = processor.feature_extractor
    feats, mask = featurize(np.zeros(75 * 16000, dtype=np.float32), fe)
    assert feats.shape == (3, 128, 3000)
    assert mask.sum(-1).tolist() == [3000, 3000, 1500]
    assert audio_tokens_for_frames(mask.sum(-1)).tolist() == [750, 750, 375]
    assert tokens_per_second(fe) == 25.0 and seconds_to_tokens(120, fe) == 3000
