"""Loss numerics of U-Net and SyncNet training (issue 14, point 2), in-process on tiny random networks: LPIPS in
fp32, TREPA's clamp, the latent-space sync loss, chunked VAE encoding of latent SyncNet batches."""
from __future__ import annotations

import contextlib

import pytest
import torch

from latentsync import hub
from latentsync.face.mask import load_mask
from latentsync.models.stable_syncnet import StableSyncNet
from latentsync.models.videomae_v2 import VideoMAEConfig, VideoMAEv2
from latentsync.vae import load_vae
from training.config import ConfigError, load_config
from training.losses.perceptual import PerceptualLoss, build_lpips
from training.losses.sync import SyncLoss
from training.losses.trepa import TREPALoss
from training.train_syncnet import SyncNetObjective
from training.train_unet import UNetObjective
from training.unet_model import build_unet

AUDIO = {"in_channels": 1, "block_out_channels": [32, 32, 32, 32, 32, 64],
         "downsample_factors": [[2, 1], 2, 2, 2, 2, [2, 3]], "attn_blocks": [0] * 6}


def latent_syncnet(num_frames: int, latent_size: int = 8) -> StableSyncNet:
    """A tiny latent-space StableSyncNet: `num_frames` x 4 latent channels at `latent_size` (64 px faces)."""
    levels = latent_size.bit_length() - 1
    # >= 2 values per GroupNorm group at 1 x 1
    visual = {"in_channels": 4 * num_frames, "block_out_channels": [32] * (levels - 1) + [64, 64],
              "downsample_factors": [2] * levels + [1],
              "attn_blocks": [0] * (levels + 1)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return StableSyncNet({"audio_encoder": AUDIO, "visual_encoder": visual}).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def tiny_vae(training_models):
    return load_vae(hub.locate_vae(training_models, download=False), device="cpu").requires_grad_(False)


def test_lpips_of_fp16_inputs_is_finite_and_equals_the_fp32_value():
    model = build_lpips("alex", random_backbone=True)
    loss = PerceptualLoss(model)
    generator = torch.Generator().manual_seed(0)
    fake, real = (torch.rand(2, 3, 32, 64, generator=generator).half() * 2 - 1 for _ in range(2))
    reference = loss(fake.float(), real.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a mixed-precision run: half inputs, autocast on
        got = loss(fake, real)
    assert got.dtype == torch.float32 and torch.isfinite(got) and got.item() == reference.item()
    with torch.no_grad():  # an all-zero feature map: in fp16 LPIPS' 1e-10 epsilon is 0 and 0/0 = NaN
        model.net.slice1[0].weight.zero_()
        model.net.slice1[0].bias.fill_(-1.0)
    assert loss(fake, real).item() == 0.0
    assert torch.isnan(model.half()(fake, real)).all()  # what casting LPIPS to the run's fp16 gave


def test_trepa_clamps_the_decoded_frames_to_the_unit_range_as_the_official():
    cfg = VideoMAEConfig(image_size=28, embed_dim=32, depth=1, num_heads=2, mlp_hidden=64, num_classes=4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        loss = TREPALoss(VideoMAEv2(cfg).eval().requires_grad_(False))
    generator = torch.Generator().manual_seed(1)
    fake = torch.randn(1, 3, 16, 28, 28, generator=generator) * 3  # decoded x0 estimates overshoot [-1, 1]
    real = torch.rand(1, 3, 16, 28, 28, generator=generator) * 2 - 1
    assert loss(fake, real).item() == pytest.approx(loss(fake.clamp(-1, 1), real).item(), rel=1e-6)


def test_without_pixel_supervision_the_sync_loss_reads_the_predicted_latents(training_models, tiny_vae):
    frames = 8  # stage 1 has no motion modules: any window length runs, a short one keeps the test fast
    cfg = load_config("smoke_stage1", ["run.use_syncnet=true", f"models.dir={training_models}",
                                       "models.tiny_seed=null", f"data.num_frames={frames}"])
    assert not cfg.run.pixel_space_supervise
    mask = load_mask(hub.locate_file(training_models, hub.MASK_FILE, download=False), 64)
    objective = UNetObjective(cfg, tiny_vae, mask, SyncLoss(latent_syncnet(frames), resolution=64, lower_half=False),
                              None, None)
    assert objective.weights["sync"] == pytest.approx(0.05)
    unet, _ = build_unet(cfg, training_models, seed=0)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand(1, frames, 3, 64, 64, generator=generator) * 2 - 1
    batch = {"pixel_values": pixels, "masked_pixel_values": pixels * mask, "ref_pixel_values": pixels.flip(1),
             "audio_embeds": torch.randn(1, frames, 50, 384, generator=generator),
             "mel": torch.randn(1, 1, 80, 52, generator=generator)}
    losses = objective(unet, batch, torch.Generator().manual_seed(1), contextlib.nullcontext)
    assert torch.isfinite(losses["sync"]) and losses["sync"].item() > 0
    assert losses["loss"].item() == pytest.approx(losses["recon"].item() + 0.05 * losses["sync"].item(), rel=1e-5)
    losses["sync"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in unet.parameters())


def test_a_latent_sync_loss_needs_a_latent_syncnet_and_says_which_key_to_set():
    pixel = StableSyncNet({"audio_encoder": AUDIO, "visual_encoder": {
        "in_channels": 48, "block_out_channels": [32, 64], "downsample_factors": [2, 2], "attn_blocks": [0, 0]}})
    with pytest.raises(ConfigError, match="syncnet.config=syncnet_16_latent"):
        SyncLoss(pixel).require_latent_input(16)
    SyncLoss(latent_syncnet(16)).require_latent_input(16)


def test_latent_syncnet_batches_are_vae_encoded_in_chunks(tiny_vae, monkeypatch):
    calls = []
    encode = tiny_vae.encode
    monkeypatch.setattr(tiny_vae, "encode", lambda x, *a, **k: calls.append(x.shape[0]) or encode(x, *a, **k))
    frames = torch.rand(3, 2, 3, 32, 32) * 2 - 1  # 3 samples of 2 frames, encoded 2 frames at a time
    chunked = SyncNetObjective(None, tiny_vae, vae_chunk_frames=2).visual_input(frames,
                                                                              torch.Generator().manual_seed(0))
    assert calls == [2, 2, 2] and chunked.shape == (3, 8, 4, 4)
    whole = SyncNetObjective(None, tiny_vae, vae_chunk_frames=640).visual_input(frames,
                                                                                torch.Generator().manual_seed(0))
    assert calls[3:] == [6] and torch.allclose(chunked, whole, atol=1e-5)  # the posterior noise is drawn per frame
