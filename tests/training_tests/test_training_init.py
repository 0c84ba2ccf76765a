"""Where a U-Net run starts (issue 14, point 1): the released weights in the configured layout, the keys that do
not carry over listed, and no run whose frozen parameters would stay at random init."""
from __future__ import annotations

import json

import pytest
import torch

from latentsync import hub
from latentsync.models.checkpoint import load_unet_state_dict
from latentsync.models.trainable import set_trainable
from training.config import ConfigError, load_config
from training.init_weights import log_report, require_frozen_loaded
from training.unet_model import build_unet
from training_tests.helpers import accelerate_launch, read_jsonl


def config(name: str, models, *overrides: str):
    return load_config(name, ["data_dir=/d", "output_dir=/o", "models.tiny_seed=null", f"models.dir={models}",
                              *overrides])


def released(models) -> dict[str, torch.Tensor]:
    return load_unet_state_dict(hub.locate_file(models, hub.unet_file("1.5"), download=False))


def test_stage2_efficient_starts_from_the_released_unet_with_the_encoder_motion_modules_dropped(training_models,
                                                                                                tmp_path):
    cfg = config("smoke_stage2_efficient", training_models)
    unet, report = build_unet(cfg, training_models, seed=0)
    file = released(training_models)
    encoder_mm = sorted(k for k in file if k.startswith("down_blocks.") and ".motion_modules." in k
                        and not k.endswith("pos_encoder.pe"))  # sinusoid buffers, rebuilt by every model
    assert encoder_mm and sorted(report.dropped) == encoder_mm
    assert report.at_init == []
    state = unet.state_dict()
    assert all(torch.equal(state[k], file[k]) for k in report.loaded)
    assert len(report.loaded) == len([k for k in state if not k.endswith("pos_encoder.pe")])
    set_trainable(unet, list(cfg.run.trainable_modules))
    require_frozen_loaded(unet, report)
    log_report(report, tmp_path)
    written = json.loads((tmp_path / "logs" / "init_weights.json").read_text())
    assert sorted(written["dropped"]) == encoder_mm and written["at_init"] == []


def test_stage1_starts_from_the_released_unet_as_the_official_config_without_its_motion_modules(training_models):
    assert load_config("stage1").ckpt.init_from == "1.5" and load_config("stage1_512").ckpt.init_from == "1.6"
    unet, report = build_unet(config("smoke_stage1", training_models), training_models, seed=0)
    file_mm = sorted(k for k in released(training_models) if ".motion_modules." in k and not k.endswith(".pe"))
    assert sorted(report.dropped) == file_mm and report.at_init == []


def test_a_stage1_file_leaves_the_stage2_motion_modules_at_init_and_they_must_be_trained(training_models, tmp_path):
    stage1, _ = build_unet(config("smoke_stage1", training_models), training_models, seed=0)
    path = tmp_path / "stage1.pt"
    torch.save({"state_dict": stage1.state_dict()}, path)
    cfg = config("smoke_stage2_efficient", training_models, f"ckpt.init_from={path}")
    unet, report = build_unet(cfg, training_models, seed=0)
    assert report.dropped == [] and report.at_init and all(".motion_modules." in k for k in report.at_init)
    set_trainable(unet, list(cfg.run.trainable_modules))
    require_frozen_loaded(unet, report)  # the motion modules are trained
    set_trainable(unet, ["attn2."])
    with pytest.raises(ConfigError, match="run.trainable_modules"):
        require_frozen_loaded(unet, report)


def test_a_subset_run_from_random_weights_refuses_to_start_naming_the_key(training_models):
    cfg = config("smoke_stage2_efficient", training_models, "ckpt.init_from=null")
    unet, report = build_unet(cfg, training_models, seed=0)
    set_trainable(unet, list(cfg.run.trainable_modules))
    with pytest.raises(ConfigError, match="ckpt.init_from"):
        require_frozen_loaded(unet, report)
    set_trainable(unet, None)  # every parameter trained: a fresh init is a legitimate start
    require_frozen_loaded(unet, report)


@pytest.mark.slow
def test_stage2_efficient_smoke_run_trains_only_its_subset_from_the_released_weights(training_data, training_models,
                                                                                    tmp_path):
    out = tmp_path / "run"
    accelerate_launch("training.train_unet", "smoke_stage2_efficient", out, training_data, "max_steps=1",
                      "models.tiny_seed=null", f"models.dir={training_models}", "validation.every=0", processes=1)
    file = released(training_models)
    written = json.loads((out / "logs" / "init_weights.json").read_text())
    assert written["dropped"] and all(k.startswith("down_blocks.") and ".motion_modules." in k
                                      for k in written["dropped"])
    metrics = read_jsonl(out / "logs" / "metrics.jsonl")
    assert [r["step"] for r in metrics] == [1]
    assert {"loss/recon", "loss/sync", "loss/lpips"} <= set(metrics[0]) and "loss/trepa" not in metrics[0]
    trained = load_unet_state_dict(out / "checkpoints" / "step-0000001" / "latentsync_unet-v1.5.pt")
    assert not any(k.startswith("down_blocks.") and ".motion_modules." in k for k in trained)
    frozen = [k for k in trained if "motion_modules." not in k and "attn2." not in k and not k.endswith(".pe")]
    assert frozen and all(torch.equal(trained[k], file[k]) for k in frozen)  # the released values, not random
    learned = [k for k in trained if ".attn2.to_q.weight" in k]
    assert learned and any(not torch.equal(trained[k], file[k]) for k in learned)
