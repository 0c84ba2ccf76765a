"""The frozen stage-2 networks load from local files only: VideoMAE-v2 (the trainer's checkpoint layout, read with
weights_only) and LPIPS' backbone (torchvision's file mapped into the lpips package's slices)."""
from __future__ import annotations

import argparse

import pytest
import torch

from latentsync.models.checkpoint import CheckpointError
from latentsync.models.videomae_v2 import VIT_G_14, VideoMAEConfig, VideoMAEv2, load_videomae
from training.losses.perceptual import build_lpips
from training.losses.trepa import TREPALoss

TINY = VideoMAEConfig(image_size=28, embed_dim=32, depth=2, num_heads=2, mlp_hidden=64, num_classes=5)


def test_vit_g_has_the_official_size_and_key_layout():
    with torch.device("meta"):
        model = VideoMAEv2(VIT_G_14)
    assert sum(p.numel() for p in model.parameters()) == 1_011_855_918  # ViT-g/14 + 174-class head
    keys = list(model.state_dict())
    assert keys[:2] == ["patch_embed.proj.weight", "patch_embed.proj.bias"]
    assert {"blocks.39.attn.q_bias", "blocks.39.attn.v_bias", "blocks.39.attn.qkv.weight", "fc_norm.weight",
            "head.weight"} <= set(keys)
    assert "pos_embed" not in keys and not any(k.endswith("attn.qkv.bias") for k in keys)


def test_videomae_loads_the_trainer_checkpoint_layout_safely(tmp_path):
    torch.manual_seed(0)
    model = VideoMAEv2(TINY).eval()
    path = tmp_path / "vit.pth"
    torch.save({"model": model.state_dict(), "epoch": 3, "args": argparse.Namespace(lr=1e-3)}, path)
    loaded = load_videomae(path, TINY)
    video = torch.rand(2, 3, 16, 28, 28)
    assert torch.equal(loaded.forward_features(video), model.forward_features(video))
    assert not any(p.requires_grad for p in loaded.parameters())
    trepa = TREPALoss(loaded)
    real = torch.rand(1, 3, 16, 40, 40) * 2 - 1
    assert trepa(real, real).item() == pytest.approx(0.0, abs=1e-10)
    assert trepa(real.flip(2), real).item() > 0
    torch.save({"module": {k: v for k, v in model.state_dict().items() if "blocks.1." not in k}}, path)
    with pytest.raises(CheckpointError, match="blocks.1"):
        load_videomae(path, TINY)


def test_lpips_backbone_comes_from_the_local_torchvision_file(tmp_path):
    import torchvision

    torch.manual_seed(0)
    alexnet = torchvision.models.alexnet(weights=None)
    path = tmp_path / "alexnet.pth"
    torch.save(alexnet.state_dict(), path)
    lpips = build_lpips("alex", path)
    lpips_params = dict(lpips.net.named_parameters())
    assert torch.equal(lpips_params["slice1.0.weight"], alexnet.features[0].weight)
    assert torch.equal(lpips_params["slice5.10.weight"], alexnet.features[10].weight)
    x = torch.rand(2, 3, 32, 64) * 2 - 1
    assert lpips(x, x).abs().max() < 1e-6 and lpips(x, x.flip(0)).mean() > 0
    with pytest.raises(ValueError, match="random_backbone"):
        build_lpips("alex")
