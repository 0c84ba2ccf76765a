"""Training data as the official reads it, without its flaws (issue 14, point 3), in-process: broken clips are
skipped or replaced and counted, audio features are cached per clip (not per file name), SyncNet validation uses
held-out clips, a non-finite loss stops the run naming the clips, scene cuts use the official detector."""
from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from training import runtime
from training.batch_checks import NonFiniteLossError
from training.config import load_config
from training.data.audio_cache import AudioFeatureCache, cache_for
from training.data.clip_set import ClipSet, admit_clips
from training.data.clips import count_frames, list_clips
from training.data.holdout import holdout_split
from training.data.syncnet_dataset import SyncNetDataset
from training.train_syncnet import build_datasets
from training_tests.helpers import read_jsonl


def clips_of(data: Path) -> list[Path]:
    return list_clips(data)


def tone_clip(path: Path, hz: float) -> Path:
    """A 0.5 s clip (4 frames of 32 px) whose audio is a sine of `hz`."""
    from latentsync.video_io import write_video

    path.parent.mkdir(parents=True, exist_ok=True)
    t = torch.arange(8000) / 16000
    audio = (0.3 * torch.sin(2 * math.pi * hz * t))[None]
    return write_video(path, torch.zeros(4, 32, 32, 3, dtype=torch.uint8), 8, audio=audio, sample_rate=16000,
                       overwrite=True)


def test_a_broken_clip_is_skipped_at_admission_and_replaced_during_training(training_data, tmp_path):
    good = clips_of(training_data)[0]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(good.read_bytes()[:3000])  # a truncated download
    cache = AudioFeatureCache(tmp_path / "mel")
    admitted = admit_clips([good, broken], cache)
    assert admitted.clips == [good] and "does not decode" in admitted.skipped[str(broken)]

    n = count_frames(good)
    listed = ClipSet([good, broken], [n, n], [admitted.last_start[0]] * 2)  # it broke after admission
    dataset = SyncNetDataset(listed, cache, resolution=32, seed=0)
    items = [dataset[i] for i in range(4)]
    assert all(item["clip"] == 0 for item in items)
    first_choice = [dataset.order.clip(i) for i in range(4)]
    assert [item["replaced"] > 0 for item in items] == [c == 1 for c in first_choice] and 1 in first_choice
    again = dataset[first_choice.index(1)]  # replaced the same way every time: a resumed run sees the same data
    assert torch.equal(again["frames"], items[first_choice.index(1)]["frames"])


def test_two_datasets_with_the_same_file_names_get_their_own_audio_features(tmp_path):
    a = tone_clip(tmp_path / "a" / "id1" / "00001.mp4", 300)
    b = tone_clip(tmp_path / "b" / "id1" / "00001.mp4", 1200)
    c = tone_clip(tmp_path / "a" / "id2" / "00001.mp4", 2500)
    shared = {"audio_mel_cache_dir": str(tmp_path / "cache")}  # as the official configs: one cache folder
    cache_a = cache_for({"data_dir": str(tmp_path / "a"), **shared}, tmp_path)
    cache_b = cache_for({"data_dir": str(tmp_path / "b"), **shared}, tmp_path)
    mel_a, mel_b, mel_c = cache_a.mel(a), cache_b.mel(b), cache_a.mel(c)
    assert not torch.equal(mel_a, mel_b) and not torch.equal(mel_a, mel_c)
    assert len({cache_a.mel_path(a), cache_b.mel_path(b), cache_a.mel_path(c)}) == 3
    assert torch.equal(cache_a.mel(a), mel_a)  # a cache hit
    tone_clip(a, 700)  # the clip was re-made: its size or mtime changed, its features are recomputed
    os.utime(a, ns=(1, 1))
    assert not torch.equal(cache_a.mel(a), mel_a)


def test_syncnet_validation_uses_held_out_clips_and_lists_them(training_data, tmp_path):
    clips = clips_of(training_data)
    train, held = holdout_split(clips, 0.05, training_data)
    assert len(held) == 1 and sorted(train + held) == sorted(clips)
    assert holdout_split(list(reversed(clips)), 0.05, training_data)[1] == held  # independent of the list order
    cfg = load_config("smoke_syncnet", [f"data_dir={training_data}", f"output_dir={tmp_path}"])
    one_process = SimpleNamespace(process_index=0, num_processes=1, is_main_process=True,
                                  wait_for_everyone=lambda: None, main_process_first=contextlib.nullcontext)
    train_set, val_set = build_datasets(cfg, one_process, tmp_path)
    assert val_set.clips.clips == held and not set(val_set.clips.clips) & set(train_set.clips.clips)
    assert (tmp_path / "logs" / "validation_clips.txt").read_text().split() == [str(c) for c in held]
    off = load_config("smoke_syncnet", [f"data_dir={training_data}", f"output_dir={tmp_path}", "validation.every=0"])
    assert build_datasets(off, one_process, tmp_path)[0].clips.clips == train_set.clips.clips  # resumable without it
    with pytest.raises(ValueError, match="validation.data_dir"):
        holdout_split(clips[:1], 0.05)


class ToyClips(torch.utils.data.Dataset):
    """Two named clips; sample 1 was a replaced clip; the loss of step 2 is NaN (see `losses_of`)."""

    def __init__(self):
        self.clips = ClipSet([Path("/data/a.mp4"), Path("/data/b.mp4")], [48, 48], [0, 0], {"/data/x.mp4": "broken"})

    def __len__(self):
        return 2

    def __getitem__(self, sample_id):
        return {"x": torch.ones(2), "sample_id": sample_id, "clip": sample_id % 2, "replaced": int(sample_id == 1)}


def test_a_non_finite_loss_stops_the_run_naming_the_step_clips_and_terms(tmp_path):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    cfg = load_config("smoke_syncnet", ["data_dir=/d", f"output_dir={tmp_path}", "max_steps=3", "data.batch_size=1",
                                        "validation.every=0", "ckpt.save_state_steps=100"])
    model = torch.nn.Linear(2, 1)
    optimizer, make_lr = runtime.make_optimizer(cfg, list(model.parameters()), 1)
    accelerator = Accelerator(cpu=True)
    try:
        def losses_of(batch, generator):
            recon = model(batch["x"]).pow(2).mean()
            sync = recon * (float("nan") if int(batch["sample_id"][0]) == 1 else 1.0)
            return {"loss": recon + sync, "recon": recon, "sync": sync}

        with pytest.raises(NonFiniteLossError) as error:
            runtime.train_loop(cfg, accelerator, tmp_path, model, optimizer, make_lr(optimizer), ToyClips(), 0,
                               losses_of, export=lambda m, s: None)
    finally:
        AcceleratorState._reset_state(True)
    message = str(error.value)
    assert "step 2" in message and "/data/b.mp4" in message and "'sync': nan" in message, message
    logged = read_jsonl(tmp_path / "logs" / "metrics.jsonl")
    assert [r["step"] for r in logged] == [1]  # step 2 never reached the optimizer
    assert logged[0]["data/skipped_clips"] == 1 and logged[0]["data/replaced_clips"] == 0


def test_scene_cuts_use_the_official_adaptive_detector_with_threshold_2():
    from scenedetect.detectors import AdaptiveDetector

    from training.prepare.scenes import SceneCuts

    cuts = SceneCuts()
    assert isinstance(cuts.detector, AdaptiveDetector) and cuts.detector.adaptive_threshold == 2.0
    rng = np.random.default_rng(0)
    shots = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    for i in range(60):
        cuts.push(np.clip(shots[i >= 30].astype(int) + i % 3, 0, 255).astype(np.uint8))
    assert cuts.scenes(60) == [(0, 30), (30, 60)]
