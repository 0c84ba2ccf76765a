"""accelerate launch -m training.train_unet --config FILE [key=value ...]

Trains the LatentSync U-Net on aligned clips (`training.prepare_data`): stage 1 (noise MSE with mixed noise, all
parameters) or stage 2 (a trainable subset; + sync loss through a frozen StableSyncNet, LPIPS and TREPA on the
decoded one-step x0 estimate), every loss switchable and weighted in the config. Checkpoints go to
`<output_dir>/checkpoints/step-N/` in the official format with our `unet_config.yaml` beside them; resumable
states to `<output_dir>/state/`; TensorBoard logs to `<output_dir>/logs/`.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from latentsync import hub
from latentsync.audio.whisper_encoder import WhisperAudioEncoder
from latentsync.face.mask import load_mask
from latentsync.models.trainable import set_trainable
from latentsync.sampling.ddim import make_scheduler
from latentsync.sampling.training_noise import one_step_sampling, training_noise
from latentsync.vae import SCALING_FACTOR, VAECodec, load_vae
from latentsync.process_exit import exit_with

from . import runtime
from .aux_models import build_stable_syncnet, build_videomae, locate_frozen_files, models_root
from .config import require
from .data.audio_cache import cache_for, fill_caches
from .data.clip_index import indexed_clips
from .data.clips import list_clips
from .data.unet_dataset import UNetDataset
from .init_weights import log_report, require_frozen_loaded
from .losses.perceptual import PerceptualLoss, build_lpips
from .losses.sync import SyncLoss
from .lora import add_lora, export_lora, lora_rank
from .losses.trepa import TREPALoss
from .unet_model import build_unet, export_checkpoint


class UNetObjective:
    """All U-Net losses of one batch. Weights of 0 (or a switched-off loss) skip the network entirely."""

    def __init__(self, cfg: DictConfig, vae, mask: torch.Tensor, sync: SyncLoss | None, lpips, trepa):
        self.cfg, self.vae, self.mask = cfg, vae, mask
        self.scheduler = make_scheduler()
        self.sync, self.lpips, self.trepa = sync, lpips, trepa
        run = cfg.run
        self.pixel = bool(run.pixel_space_supervise)
        # Without pixel supervision the sync loss reads the predicted latents (a latent-space SyncNet), as official.
        self.weights = {"recon": float(run.recon_loss_weight),
                        "sync": float(run.sync_loss_weight) if run.use_syncnet else 0.0,
                        "lpips": float(run.perceptual_loss_weight) if self.pixel else 0.0,
                        "trepa": float(run.trepa_loss_weight) if self.pixel else 0.0}

    def encode(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B, F, 3, R, R) -> scaled posterior samples (B, 4, F, h, w)."""
        b, f = pixels.shape[:2]
        latents = VAECodec(self.vae, generator=generator, batch_size=b * f).encode(pixels.flatten(0, 1))
        return latents.unflatten(0, (b, f)).transpose(1, 2).float()

    def __call__(self, unet, batch: dict, generator: torch.Generator, autocast) -> dict[str, torch.Tensor]:
        gt = batch["pixel_values"]
        b, f, _, r, _ = gt.shape
        gt_latents = self.encode(gt, generator)
        masked_latents = self.encode(batch["masked_pixel_values"], generator)
        ref_latents = self.encode(batch["ref_pixel_values"], generator)
        h, w = gt_latents.shape[-2:]
        mask = F.interpolate(self.mask[None, None].to(gt_latents), size=(h, w))  # nearest, as official
        mask = mask[:, :, None].expand(b, 1, f, h, w)

        run = self.cfg.run
        noise = training_noise(gt_latents, generator, mixed=bool(run.use_mixed_noise),
                               alpha=float(run.mixed_noise_alpha))
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), generator=generator,
                          device=generator.device).to(gt_latents.device)
        noisy = self.scheduler.add_noise(gt_latents, noise, t)
        with autocast():
            pred = unet(torch.cat([noisy, mask, masked_latents, ref_latents], dim=1), t, batch["audio_embeds"])
        losses = {"recon": F.mse_loss(pred.float(), noise.float())}
        if not self.pixel and self.weights["sync"]:
            pred_x0 = one_step_sampling(self.scheduler, pred.float(), t, noisy)
            losses["sync"] = self.sync.from_latents(pred_x0, batch["mel"])
        if self.pixel and any(self.weights[k] for k in ("sync", "lpips", "trepa")):
            pred_x0 = one_step_sampling(self.scheduler, pred.float(), t, noisy)
            with autocast():
                z = (pred_x0.transpose(1, 2).flatten(0, 1) / SCALING_FACTOR).to(self.vae.dtype)
                decoded = self.vae.decode(z).sample.float()  # (B*F, 3, R, R), gradients flow to pred_x0
            gt_flat = gt.flatten(0, 1).to(decoded)
            if self.weights["lpips"]:
                losses["lpips"] = self.lpips(decoded[:, :, r // 2:, :], gt_flat[:, :, r // 2:, :])
            if self.weights["trepa"]:
                losses["trepa"] = self.trepa(decoded.unflatten(0, (b, f)).transpose(1, 2),
                                             gt_flat.unflatten(0, (b, f)).transpose(1, 2))
            if self.weights["sync"]:
                losses["sync"] = self.sync(decoded.unflatten(0, (b, f)), batch["mel"])
        losses["loss"] = sum(self.weights[k] * v for k, v in losses.items() if k in self.weights)
        return losses


def build_objective(cfg: DictConfig, accelerator, root: Path, vae, mask) -> UNetObjective:
    run, device, dtype = cfg.run, accelerator.device, runtime.frozen_dtype(accelerator)
    pixel = bool(run.pixel_space_supervise)
    want_sync = bool(run.use_syncnet) and float(run.sync_loss_weight) != 0
    want_lpips = pixel and float(run.perceptual_loss_weight) != 0
    want_trepa = pixel and float(run.trepa_loss_weight) != 0
    needs = [name for name, wanted, random in (
        ("stable_syncnet", want_sync, cfg.syncnet.get("random_init", False)),
        ("videomae", want_trepa, cfg.trepa.get("random_init", False)),
        ("vgg16", want_lpips and cfg.lpips.net == "vgg", cfg.lpips.get("random_backbone", False))) if wanted and not random]
    with accelerator.main_process_first():  # the main process downloads, the others find the files
        files = locate_frozen_files(cfg, root, needs)
    sync = lpips = trepa = None
    if want_sync:
        net, res, lower = build_stable_syncnet(cfg.syncnet, files.get("stable_syncnet"), device, dtype)
        if cfg.run.enable_gradient_checkpointing:
            net.enable_gradient_checkpointing()
        sync = SyncLoss(net, res, lower)
        if not pixel:
            sync.require_latent_input(int(cfg.data.num_frames))
    if want_lpips:
        if cfg.lpips.net != "vgg" and not cfg.lpips.get("random_backbone") and cfg.models.get("vgg16") is None:
            raise ValueError(f"lpips.net={cfg.lpips.net} needs its torchvision backbone file in models.vgg16")
        lpips = PerceptualLoss(build_lpips(cfg.lpips.net, files.get("vgg16") or cfg.models.get("vgg16"),
                                           bool(cfg.lpips.get("random_backbone"))).to(device=device))
    if want_trepa:
        model = build_videomae(cfg.trepa, files.get("videomae"), device, dtype)
        model.gradient_checkpointing = bool(cfg.run.enable_gradient_checkpointing)
        trepa = TREPALoss(model)
    return UNetObjective(cfg, vae, mask, sync, lpips, trepa)


def locate_inputs(cfg: DictConfig, root: Path) -> dict[str, Path]:
    """VAE, Whisper and mask: configured paths, else the models folder (downloaded when allowed)."""
    download = bool(cfg.models.download)
    out = {}
    out["vae"] = Path(cfg.models.vae) if cfg.models.get("vae") else hub.locate_vae(root, download=download)
    out["whisper"] = (Path(cfg.models.whisper) if cfg.models.get("whisper")
                      else hub.locate_file(root, hub.WHISPER_FILE, download=download))
    out["mask"] = (Path(cfg.data.mask_image_path) if cfg.data.get("mask_image_path")
                   else hub.locate_file(root, hub.MASK_FILE, download=download))
    return out


def build_dataset(cfg: DictConfig, accelerator, output_dir: Path, whisper_path: Path, mask: torch.Tensor):
    data = cfg.data
    clips = list_clips(data.get("data_dir"), data.get("fileslist"))
    encoder = WhisperAudioEncoder.from_file(whisper_path, device="cpu", dtype=torch.float32)
    cache = cache_for(data, output_dir, whisper=encoder.features)
    fill_caches(cache, clips, accelerator.process_index, accelerator.num_processes, embeds=True)
    accelerator.wait_for_everyone()
    admitted = indexed_clips(accelerator, clips, cache, int(data.num_frames), float(data.video_fps))
    return UNetDataset(admitted, cache, mask, int(data.resolution), int(data.num_frames), float(data.video_fps),
                       seed=int(cfg.run.seed))


def train(cfg: DictConfig) -> Path:
    accelerator, output_dir = runtime.make_accelerator(cfg)
    device = accelerator.device
    if not cfg.data.get("fileslist"):
        require(cfg, "data.data_dir")
    with accelerator.main_process_first():
        root = models_root(cfg, output_dir)
        paths = locate_inputs(cfg, root)
        unet, init = build_unet(cfg, root, seed=int(cfg.run.seed))  # may download the released U-Net
    if cfg.run.enable_gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    lora = lora_rank(cfg) > 0
    if lora:  # the adapters are added below, on the U-Net as loaded: all of it frozen
        unet.requires_grad_(False)
    else:
        modules = cfg.run.get("trainable_modules")
        if not set_trainable(unet, list(modules) if modules else None):
            raise ValueError(f"run.trainable_modules={list(modules)} selects no U-Net parameter")
    require_frozen_loaded(unet, init)
    if lora:
        add_lora(unet, cfg)
    if accelerator.is_main_process:
        log_report(init, output_dir)
    resolution = int(cfg.data.resolution)
    mask = load_mask(paths["mask"], resolution)
    vae = load_vae(paths["vae"], device=device, dtype=runtime.frozen_dtype(accelerator)).requires_grad_(False)
    if cfg.run.pixel_space_supervise and cfg.run.enable_gradient_checkpointing:
        vae.enable_gradient_checkpointing()
    dataset = build_dataset(cfg, accelerator, output_dir, paths["whisper"], mask)
    objective = build_objective(cfg, accelerator, root, vae, mask)

    optimizer, make_lr = runtime.make_optimizer(cfg, [p for p in unet.parameters() if p.requires_grad],
                                                accelerator.num_processes)
    unet, optimizer, lr_scheduler, ema, step = runtime.prepare_and_resume(accelerator, cfg, output_dir, unet,
                                                                          optimizer, make_lr)
    resolution, safetensors = int(cfg.data.resolution), bool(cfg.ckpt.get("safetensors", False))
    validator = {}

    def validate(model, at_step: int) -> dict:
        from .validation import UNetValidator

        if "v" not in validator:
            validator["v"] = UNetValidator(cfg, output_dir, {**paths, "models_root": root}, vae, accelerator)
        return validator["v"].run(model, at_step)

    def export(state: dict, model, at_step: int) -> Path:
        folder = runtime.checkpoint_dir(output_dir, at_step)
        if lora:
            export_lora(state, model, folder, at_step, cfg)
        else:
            export_checkpoint(state, model.config, folder, at_step, resolution, safetensors)
        return folder

    runtime.train_loop(
        cfg, accelerator, output_dir, unet, optimizer, lr_scheduler, dataset, step,
        losses_of=lambda batch, generator: objective(unet, batch, generator, accelerator.autocast),
        export=export, validate=validate, ema=ema)
    return output_dir


def main(argv: Sequence[str] | None = None) -> int:
    cfg = runtime.parse_args("accelerate launch -m training.train_unet", argv)
    train(cfg)
    return 0


if __name__ == "__main__":
    exit_with(main())
