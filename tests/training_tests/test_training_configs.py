"""Training configs and the deterministic data order (in-process, no training run)."""
from __future__ import annotations

import pytest
import torch

from latentsync.models.stable_syncnet import StableSyncNet
from latentsync.models.trainable import set_trainable
from latentsync.models.unet_3d import UNet3DConditionModel
from training import train_syncnet
from training.config import CONFIG_DIR, ConfigError, load_config
from training.data.sampler import SampleOrder, StepSampler
from training.lora import add_lora, lora_rank
from training.runtime import make_loader
from training.unet_model import model_config

UNET_CONFIGS = ["stage1", "stage1_512", "stage2", "stage2_512", "stage2_efficient", "stage2_efficient_512",
                "finetune_person", "finetune_person_lora", "smoke_stage1", "smoke_stage2", "smoke_stage2_efficient",
                "smoke_lora"]
SYNCNET_CONFIGS = ["syncnet_16_pixel_attn", "syncnet_16_pixel", "syncnet_16_latent", "smoke_syncnet"]


def test_every_shipped_config_is_tested():
    assert sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) == sorted(UNET_CONFIGS + SYNCNET_CONFIGS)


@pytest.mark.parametrize("name", UNET_CONFIGS)
def test_unet_configs_build_and_take_the_common_shortcuts(name):
    cfg = load_config(name, ["data_dir=/d", "output_dir=/o", "max_steps=7", "data.batch_size=3"])
    assert (cfg.data.data_dir, cfg.run.output_dir, cfg.run.max_train_steps, cfg.data.batch_size) == ("/d", "/o", 7, 3)
    with torch.device("meta"):
        unet = UNet3DConditionModel(**model_config(cfg))
    trainable = cfg.run.trainable_modules
    with torch.device("meta"):
        chosen = add_lora(unet, cfg) if lora_rank(cfg) else set_trainable(unet, list(trainable) if trainable else None)
    if name in ("stage2", "stage2_512"):
        assert sum(unet.get_parameter(n).numel() for n in chosen) == 674_792_320  # golden_train_math
    if name == "stage2_efficient":
        assert sum(unet.get_parameter(n).numel() for n in chosen) == 284_660_480
    if name == "finetune_person":  # the released architecture with the efficient subset
        assert len(unet.state_dict()) == 1246
        assert sum(unet.get_parameter(n).numel() for n in chosen) == 451_515_520
    if name == "finetune_person_lora":  # rank-32 adapters (A and B) on 288 projections: the README figure
        assert len(chosen) == 576 and sum(unet.get_parameter(n).numel() for n in chosen) == 14_995_456
    if name == "smoke_lora":
        assert sum(unet.get_parameter(n).numel() for n in chosen) == 73_216


@pytest.mark.parametrize("name", SYNCNET_CONFIGS)
def test_syncnet_configs_build(name):
    cfg = load_config(name, ["data_dir=/d", "output_dir=/o", "max_steps=2"])
    with torch.device("meta"):
        net = StableSyncNet(train_syncnet.model_config(cfg))
    if name == "syncnet_16_pixel_attn":
        assert sum(p.numel() for p in net.parameters()) == 401_306_080


def test_unknown_override_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match="batch_sise"):
        load_config("stage1", ["data.batch_sise=4"])
    with pytest.raises(ConfigError, match="not key=value"):
        load_config("stage1", ["max_steps"])


class _Rank:
    def __init__(self, index: int, processes: int):
        self.process_index, self.num_processes = index, processes


def _loader_cfg(accumulation: int):
    from omegaconf import OmegaConf

    return OmegaConf.create({"data": {"batch_size": 2, "num_workers": 0, "overfit_one_batch": False},
                             "run": {"gradient_accumulation_steps": accumulation}})


def test_sample_ids_are_disjoint_between_processes_and_resume_where_they_stopped():
    def take(sampler, n):
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    r0, r1 = take(StepSampler(2, 0, 2), 6), take(StepSampler(2, 1, 2), 6)
    assert r0 == [0, 1, 4, 5, 8, 9] and r1 == [2, 3, 6, 7, 10, 11]
    assert take(StepSampler(2, 0, 2, repeat_first=True), 4) == [0, 1, 0, 1]
    resumed = iter(make_loader(list(range(100)), _loader_cfg(accumulation=2), _Rank(1, 2), start_step=1))
    assert [next(resumed).tolist() for _ in range(2)] == [r1[4:], [14, 15]]  # skip_first_batches: 2 micro-batches
    order = SampleOrder(5, seed=3)
    first_pass = [order.clip(i) for i in range(5)]
    assert sorted(first_pass) == list(range(5))  # every clip once per pass
    assert [SampleOrder(5, seed=3).clip(i) for i in range(5)] == first_pass
    assert order.rng(7).integers(1 << 30) == SampleOrder(5, seed=3).rng(7).integers(1 << 30)
