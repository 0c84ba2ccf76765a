"""Denoising-loop parity: `golden_loop.pt`-format fixtures (CFG on/off x DeepCache on/off, full trajectories)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..sampling.ddim import make_scheduler
from ..sampling.denoise import denoise_window
from .report import Comparison, compare, load_fixture
from .scheduler import config_comparisons
from .unet import build_unet

TOL_LATENTS = 1e-3
TOL_UNET = 1e-4
RUNS = {  # run name -> (classifier-free guidance, DeepCache)
    "no_deepcache": (True, False),
    "deepcache": (True, True),
    "no_cfg": (False, False),
    "no_cfg_deepcache": (False, True),
}


class _RecordingUNet:
    """Calls the U-Net and keeps its raw outputs and which calls ran the whole network."""

    def __init__(self, unet, keep: int):
        self.unet, self.keep = unet, keep
        self.feed_forward_chunks = getattr(unet, "feed_forward_chunks", None)
        self.outputs: list[torch.Tensor] = []
        self.full_steps: list[int] = []
        self.calls = 0

    def __call__(self, sample, timestep, encoder_hidden_states=None, deep_cache=None):
        if deep_cache is None or not deep_cache.reuse:
            self.full_steps.append(self.calls)
        out = self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, deep_cache=deep_cache)
        if self.calls < self.keep:
            self.outputs.append(out.clone())
        self.calls += 1
        return out


def run_names(fixture: dict) -> list[str]:
    return [name for name in RUNS if f"final_{name}" in fixture]


def check(path: str | Path, runs: list[str] | None = None, ops=None, cfg_batch: str = "joint",
          ff_chunks: int = 1) -> list[Comparison]:
    """All runs in the file (or only `runs`): final latents, every trajectory step, first U-Net outputs.

    `ops` builds the U-Net from other layer classes; `cfg_batch` / `ff_chunks` are passed to `denoise_window`.
    """
    path = Path(path)
    fixture = load_fixture(path)
    unet_fixture = load_fixture(path.parent / fixture["unet_fixture"])
    unet = build_unet(unet_fixture, ops=ops)
    del unet_fixture
    scheduler = make_scheduler()
    results = config_comparisons(fixture["scheduler_config"], dict(scheduler.config))
    steps = int(fixture["num_inference_steps"])
    scheduler.set_timesteps(steps)
    results.append(compare("timesteps", scheduler.timesteps, fixture["timesteps"], 0.0))

    inputs = fixture["inputs"]
    dc = fixture.get("deepcache", {})
    keep = max((v.shape[0] for v in fixture.get("unet_out_first4", {}).values()), default=0)
    for name in runs or run_names(fixture):
        cfg, deepcache = RUNS[name]
        calls_per_step = 2 if cfg and cfg_batch == "sequential" else 1
        recorder = _RecordingUNet(unet, keep * calls_per_step)
        trajectory: list[torch.Tensor] = []
        final = denoise_window(
            recorder, scheduler, inputs["latents"], inputs["mask"], inputs["masked_image_latents"],
            inputs["ref_latents"], inputs["audio_embeds"],
            guidance_scale=float(fixture["guidance_scale"]) if cfg else 1.0,
            num_inference_steps=steps,
            deepcache_interval=int(dc.get("cache_interval", 3)) if deepcache else 1,
            deepcache_branch=int(dc.get("cache_branch_id", 0)),
            latents_callback=lambda i, x: trajectory.append(x.clone()),
            cfg_batch=cfg_batch, ff_chunks=ff_chunks,
        )
        outputs = [torch.cat(recorder.outputs[k:k + calls_per_step])
                   for k in range(0, len(recorder.outputs), calls_per_step)]
        full_steps = [c // calls_per_step for c in recorder.full_steps]  # both halves of a step, when sequential
        results.append(compare(f"{name}.final", final, fixture[f"final_{name}"], TOL_LATENTS))
        if name in fixture.get("trajectories", {}):
            results.append(compare(f"{name}.trajectory", torch.stack(trajectory), fixture["trajectories"][name],
                                   TOL_LATENTS))
        if name in fixture.get("unet_out_first4", {}):
            expected = fixture["unet_out_first4"][name]
            results.append(compare(f"{name}.unet_out_first{expected.shape[0]}",
                                   torch.stack(outputs[: expected.shape[0]]), expected, TOL_UNET))
        if deepcache and "full_network_steps" in dc:
            ok = full_steps == [s for s in dc["full_network_steps"] for _ in range(calls_per_step)]
            label = f"{name}.full_network_steps" + ("" if ok else f"[{full_steps}]")
            results.append(Comparison(label, 0.0 if ok else float("inf"), 0.0))
    return results
