"""accelerate launch -m training.train_syncnet --config FILE [key=value ...]

Trains StableSyncNet on aligned clips: mel windows with their aligned frames (label 1) or another window of the
same clip (label 0), loss BCE(cosine, label). Checkpoints (`<output_dir>/checkpoints/step-N/stable_syncnet.pt`,
official format, our `syncnet_config.yaml` beside) can supervise stage 2 through `models.stable_syncnet=FILE`.
Validation: loss and accuracy (cosine > 0.5 read as "in sync") on `validation.num_samples` samples of held-out
clips (`validation.data_dir` / `fileslist`, else `validation.holdout_fraction` of the training list).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from latentsync import hub
from latentsync.models.stable_syncnet import (
    StableSyncNet,
    load_syncnet_state_dict,
    save_syncnet_checkpoint,
    sync_loss,
    syncnet_config,
)
from latentsync.process_exit import exit_with

from . import runtime
from .aux_models import models_root
from .config import ConfigError, require
from .data.audio_cache import cache_for, data_root, fill_caches
from .data.clip_index import indexed_clips
from .data.clips import list_clips
from .data.holdout import holdout_split
from .data.syncnet_dataset import SyncNetDataset

CONFIG_NAME = "syncnet_config.yaml"
LOG = logging.getLogger("latentsync.training")


def model_config(cfg: DictConfig) -> dict:
    """`model.base` (a config of latentsync/configs/syncnet/) with `model.audio_encoder` / `visual_encoder`
    replaced when given."""
    section = OmegaConf.to_container(cfg.model, resolve=True)
    base = syncnet_config(section.pop("base", "syncnet_16_pixel_attn"))
    return {**base, **{k: v for k, v in section.items() if v is not None}}


def build_syncnet(cfg: DictConfig, seed: int) -> StableSyncNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = StableSyncNet(model_config(cfg))
    init = cfg.ckpt.get("init_from")
    if init not in (None, ""):
        net.load_state_dict(load_syncnet_state_dict(Path(str(init)).expanduser()), strict=True)
    if cfg.run.enable_gradient_checkpointing:
        net.enable_gradient_checkpointing()
    return net


def export_checkpoint(state: dict, net: StableSyncNet, folder: Path, step: int, safetensors: bool) -> Path:
    """`state`: the full state dict (gathered by the accelerator); `net` gives the config."""
    path = save_syncnet_checkpoint(state, folder / "stable_syncnet.pt", global_step=step)
    if safetensors:
        save_syncnet_checkpoint(state, path.with_suffix(".safetensors"), global_step=step)
    (folder / CONFIG_NAME).write_text("# StableSyncNet trained with training.train_syncnet\n"
                                      + yaml.safe_dump({"model": net.config}, sort_keys=False), encoding="utf-8")
    return path


class SyncNetObjective:
    """BCE(cosine, label) of a batch; latent-space SyncNets get VAE-encoded frames (x 0.18215), encoded
    `vae_chunk_frames` frames at a time (the official 640: a batch of 120 x 16 frames at once would not fit)."""

    def __init__(self, net, vae=None, vae_chunk_frames: int = 640):
        self.net, self.vae, self.vae_chunk_frames = net, vae, int(vae_chunk_frames)

    def visual_input(self, frames: torch.Tensor, generator) -> torch.Tensor:
        if self.vae is None:
            return frames
        from latentsync.vae import VAECodec

        b, f = frames.shape[:2]
        codec = VAECodec(self.vae, generator=generator, batch_size=min(b * f, self.vae_chunk_frames))
        latents = codec.encode(frames.flatten(0, 1))
        return latents.unflatten(0, (b, f)).flatten(1, 2).float()  # b (f c) h w

    def __call__(self, batch: dict, generator, autocast) -> dict[str, torch.Tensor]:
        with autocast():
            vision, audio = self.net(self.visual_input(batch["frames"], generator), batch["mel"])
        loss = sync_loss(vision, audio, batch["y"]).mean()
        return {"loss": loss}


def build_datasets(cfg: DictConfig, accelerator, output_dir: Path):
    data = cfg.data
    latent = bool(data.get("latent_space", False))

    def dataset(clips, data_dir, fileslist, seed):
        cache = cache_for({"data_dir": data_dir, "fileslist": fileslist,
                           "audio_mel_cache_dir": data.get("audio_mel_cache_dir")}, output_dir)
        fill_caches(cache, clips, accelerator.process_index, accelerator.num_processes, embeds=False)
        accelerator.wait_for_everyone()
        admitted = indexed_clips(accelerator, clips, cache, int(data.num_frames), float(data.video_fps))
        return SyncNetDataset(admitted, cache, int(data.resolution), int(data.num_frames),
                              lower_half=bool(data.lower_half) and not latent, fps=float(data.video_fps), seed=seed,
                              stack=not latent)

    # The held-out clips never depend on validation.every, so a run resumed without validation trains on the same set.
    clips, v, val = list_clips(data.get("data_dir"), data.get("fileslist")), cfg.validation, None
    every, fraction = int(v.get("every", 0) or 0), float(v.get("holdout_fraction", 0) or 0)
    if v.get("data_dir") or v.get("fileslist"):
        if every:
            val = dataset(list_clips(v.get("data_dir"), v.get("fileslist")), v.get("data_dir"), v.get("fileslist"),
                          int(cfg.run.seed) + 1)
    elif fraction > 0:  # held out of the training list, never other windows of the training clips
        clips, held = holdout_split(clips, fraction, data_root(data))
        report_holdout(held, len(clips), fraction, output_dir, accelerator.is_main_process)
        if every:
            val = dataset(held, data.get("data_dir"), data.get("fileslist"), int(cfg.run.seed) + 1)
    elif every:
        raise ConfigError("validation.every > 0 needs held-out clips: set validation.data_dir / validation.fileslist "
                          "or validation.holdout_fraction > 0")
    train = dataset(clips, data.get("data_dir"), data.get("fileslist"), int(cfg.run.seed))
    return train, val


def report_holdout(held: list[Path], kept: int, fraction: float, output_dir: Path, main: bool) -> None:
    """Log the split and list the held-out clips in `<output_dir>/logs/validation_clips.txt`."""
    if not main:
        return
    listing = output_dir / "logs" / "validation_clips.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("".join(f"{c}\n" for c in held), encoding="utf-8")
    LOG.info("SyncNet validation: %d clips held out of the training list (validation.holdout_fraction=%g, chosen by "
             "a hash of their path; %d clips train), listed in %s", len(held), fraction, kept, listing)


@torch.no_grad()
def evaluate(net, dataset, objective: SyncNetObjective, num_samples: int, batch_size: int, device) -> dict:
    net.eval()
    losses, correct, seen = 0.0, 0, 0
    generator = torch.Generator().manual_seed(0)
    for start in range(0, num_samples, batch_size):
        items = [dataset[i] for i in range(start, min(num_samples, start + batch_size))]
        batch = runtime.to_device(torch.utils.data.default_collate(items), device)
        vision, audio = net(objective.visual_input(batch["frames"], generator), batch["mel"])
        per = sync_loss(vision, audio, batch["y"])
        cos = torch.nn.functional.cosine_similarity(vision.float(), audio.float())
        losses += float(per.sum())
        correct += int(((cos > 0.5).float() == batch["y"].squeeze(1)).sum())
        seen += len(items)
    return {"val/loss": losses / seen, "val/accuracy": correct / seen}


def train(cfg: DictConfig) -> Path:
    accelerator, output_dir = runtime.make_accelerator(cfg)
    if not cfg.data.get("fileslist"):
        require(cfg, "data.data_dir")
    vae = None
    if cfg.data.get("latent_space"):
        from latentsync.vae import load_vae

        with accelerator.main_process_first():
            root = models_root(cfg, output_dir)
            vae_path = Path(cfg.models.vae) if cfg.models.get("vae") else hub.locate_vae(
                root, download=bool(cfg.models.download))
        vae = load_vae(vae_path, device=accelerator.device, dtype=runtime.frozen_dtype(accelerator))
        vae.requires_grad_(False)
    dataset, val = build_datasets(cfg, accelerator, output_dir)
    net = build_syncnet(cfg, int(cfg.run.seed))
    chunk = int(cfg.data.vae_chunk_frames)
    objective = SyncNetObjective(net, vae, chunk)
    optimizer, make_lr = runtime.make_optimizer(cfg, list(net.parameters()), accelerator.num_processes)
    model, optimizer, lr_scheduler, ema, step = runtime.prepare_and_resume(accelerator, cfg, output_dir, net,
                                                                           optimizer, make_lr)
    objective.net = model
    safetensors = bool(cfg.ckpt.get("safetensors", False))

    def validate(unwrapped, at_step: int) -> dict:
        evaluator = SyncNetObjective(unwrapped, vae, chunk)
        result = evaluate(unwrapped, val, evaluator, int(cfg.validation.num_samples), int(cfg.data.batch_size),
                          accelerator.device)
        unwrapped.train()
        return result

    runtime.train_loop(
        cfg, accelerator, output_dir, model, optimizer, lr_scheduler, dataset, step,
        losses_of=lambda batch, generator: objective(batch, generator, accelerator.autocast),
        export=lambda state, unwrapped, at_step: export_checkpoint(
            state, unwrapped, runtime.checkpoint_dir(output_dir, at_step), at_step, safetensors).parent,
        validate=validate if val is not None else None, ema=ema)
    return output_dir


def main(argv: Sequence[str] | None = None) -> int:
    cfg = runtime.parse_args("accelerate launch -m training.train_syncnet", argv)
    train(cfg)
    return 0


if __name__ == "__main__":
    exit_with(main())
