"""DDIM parity: `golden_scheduler.pt`-format fixtures (config, timesteps, alphas, first guided steps)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..sampling.ddim import make_scheduler
from .report import Comparison, compare, load_fixture

# Config entries that change the numbers (diffusers bookkeeping and PNDM-only keys are ignored).
CONFIG_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "clip_sample",
               "set_alpha_to_one", "steps_offset", "prediction_type", "thresholding", "timestep_spacing",
               "rescale_betas_zero_snr")


def config_comparisons(expected: dict, actual: dict) -> list[Comparison]:
    """One exact comparison per numerically relevant config key (error 0 or inf)."""
    return [
        Comparison(f"config.{k}[{actual.get(k)!r} vs {expected[k]!r}]" if actual.get(k) != expected[k]
                   else f"config.{k}", 0.0 if actual.get(k) == expected[k] else float("inf"), 0.0)
        for k in CONFIG_KEYS if k in expected
    ]


def check(path: str | Path) -> list[Comparison]:
    fixture = load_fixture(path)
    scheduler = make_scheduler()
    results = config_comparisons(fixture["config"], dict(scheduler.config))
    expected_t = fixture["timesteps"]
    scheduler.set_timesteps(len(expected_t))
    results.append(compare("timesteps", scheduler.timesteps, expected_t, 0.0))
    results.append(compare("alphas_cumprod", scheduler.alphas_cumprod, fixture["alphas_cumprod"], 1e-7))
    results.append(compare("final_alpha_cumprod", torch.as_tensor(scheduler.final_alpha_cumprod),
                           torch.as_tensor(fixture["final_alpha_cumprod"]), 1e-7))
    results.append(compare("init_noise_sigma", torch.as_tensor(float(scheduler.init_noise_sigma)),
                           torch.as_tensor(float(fixture["init_noise_sigma"])), 0.0))
    uncond, audio = fixture["noise_pred_uncond"], fixture["noise_pred_audio"]
    eps = uncond + float(fixture["guidance_scale"]) * (audio - uncond)
    x = fixture["latents"]
    after = fixture["after_first_3_steps"]
    for j in range(after.shape[0]):
        x = scheduler.step(eps, scheduler.timesteps[j], x, eta=0.0).prev_sample
        results.append(compare(f"after_step_{j}", x, after[j], 1e-5))
    return results
