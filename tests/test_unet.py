"""3-D U-Net: official key/shape manifests, golden parity, dtypes, input layouts, checkpointing."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import shared_path
from latentsync.config import VERSIONS, resolution, unet_config
from latentsync.models import UNet3DConditionModel
from latentsync.models.tiny import random_tiny_unet
from latentsync.parity import unet as unet_parity
from latentsync.parity.report import load_fixture


def _inputs(generator: torch.Generator, batch: int = 2, frames: int = 4, size: int = 8, audio_dim: int = 24):
    sample = torch.randn(batch, 13, frames, size, size, generator=generator)
    audio = torch.randn(batch, frames, 50, audio_dim, generator=generator)
    return sample, audio


@pytest.mark.parametrize("name", ["stage1", "stage2", "stage2_512"])
def test_state_dict_matches_official_manifest(name):
    manifest = json.loads(shared_path("reference", f"unet_keys_{name}.json").read_text())
    with torch.device("meta"):
        unet = UNet3DConditionModel(**unet_config(name))
    state = unet.state_dict()
    assert list(state) == list(manifest["params"])  # same names, same order
    assert {k: list(v.shape) for k, v in state.items()} == manifest["params"]
    assert len(state) == manifest["num_state_dict_entries"]
    assert sum(p.numel() for p in unet.parameters()) == manifest["num_parameters"]
    assert sum(b.numel() for b in unet.buffers()) == manifest["num_buffer_elements"]
    assert resolution(name) == manifest["resolution"]


def test_stage2_parameter_count_and_versions():
    with torch.device("meta"):
        unet = UNet3DConditionModel(**unet_config("stage2"))
    assert sum(p.numel() for p in unet.parameters()) == 1_267_099_844
    assert VERSIONS["1.5"]["resolution"] == 256 and VERSIONS["1.6"]["resolution"] == 512
    assert unet_config(VERSIONS["1.5"]["unet_config"]) == unet_config(VERSIONS["1.6"]["unet_config"])


def test_golden_tiny_parity():
    results = unet_parity.check(shared_path("golden", "golden_tiny.pt"))
    names = {r.name for r in results}
    assert {"output", "case_cfg.output", "intermediates.mid_block", "intermediates.up_blocks.3"} <= names
    bad = [r.line() for r in results if not r.ok]
    assert not bad, bad
    print("\n".join(r.line() for r in results))


def test_golden_tiny_check_can_fail(tmp_path):
    fixture = load_fixture(shared_path("golden", "golden_tiny.pt"))
    fixture["output"][0, 0, 0, 0, 0] += 1e-2
    fixture["case_cfg"]["output"] = fixture["case_cfg"]["output"][:1]  # wrong shape -> infinite error
    path = tmp_path / "corrupt_tiny.pt"
    torch.save(fixture, path)
    results = {r.name.split("[")[0]: r for r in unet_parity.check(path)}
    assert not results["output"].ok and results["output"].max_abs_err == pytest.approx(1e-2, rel=1e-3)
    assert not results["case_cfg.output"].ok
    assert results["intermediates.mid_block"].ok


@pytest.mark.parametrize("dtype,rel_tol", [(torch.bfloat16, 0.1), (torch.float16, 0.05)])
def test_half_precision_forward_close_to_fp32(dtype, rel_tol):
    g = torch.Generator().manual_seed(0)
    unet = random_tiny_unet(g)
    sample, audio = _inputs(g)
    with torch.no_grad():
        ref = unet(sample, torch.tensor(951), audio)
        out = unet.to(dtype)(sample.to(dtype), torch.tensor(951), audio.to(dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    err = (out.float() - ref).abs()
    assert err.max() <= rel_tol * ref.abs().max()
    assert err.mean() <= 0.02 * ref.abs().mean() * 10


def test_audio_layouts_and_timestep_forms_agree():
    g = torch.Generator().manual_seed(1)
    unet = random_tiny_unet(g)
    sample, audio = _inputs(g)
    with torch.no_grad():
        out4 = unet(sample, torch.tensor(501), audio)
        out3 = unet(sample, torch.tensor([501, 501]), audio.flatten(0, 1))
        out_int = unet(sample, 501, audio)
        single = unet(sample[1:], torch.tensor(501), audio[1:])
    assert torch.equal(out4, out3) and torch.equal(out4, out_int)
    torch.testing.assert_close(single, out4[1:], rtol=0, atol=2e-3)  # batch elements independent (kernels differ by batch)
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        unet(sample, 501, audio[:, :3])


def test_groupnorm_pools_frames_in_resnets():
    """Frames interact only through the 5-D GroupNorms and motion modules: changing one frame changes the others."""
    g = torch.Generator().manual_seed(2)
    unet = random_tiny_unet(g, use_motion_module=False)
    sample, audio = _inputs(g, batch=1)
    changed = sample.clone()
    changed[:, :, 0] += 1.0
    with torch.no_grad():
        a, b = unet(sample, 10, audio), unet(changed, 10, audio)
    assert (a[:, :, 1:] - b[:, :, 1:]).abs().max() > 1e-4


def test_odd_spatial_size_and_too_many_frames():
    g = torch.Generator().manual_seed(3)
    unet = random_tiny_unet(g)
    sample, audio = _inputs(g, batch=1, size=6)
    with torch.no_grad():
        assert unet(sample, 1, audio).shape == (1, 4, 4, 6, 6)
    sample, audio = _inputs(g, batch=1, frames=25, size=2)
    with pytest.raises(ValueError, match="max_len"):
        with torch.no_grad():
            unet(sample, 1, audio)


def test_gradient_checkpointing_gives_same_gradients():
    g = torch.Generator().manual_seed(4)
    unet = random_tiny_unet(g).train()
    sample, audio = _inputs(g, batch=1)

    def grads():
        unet.zero_grad(set_to_none=True)
        unet(sample, 300, audio).square().mean().backward()
        return {n: p.grad.clone() for n, p in unet.named_parameters() if p.grad is not None}

    plain = grads()
    unet.enable_gradient_checkpointing()
    assert all(m.gradient_checkpointing for m in unet.down_blocks)
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys() and len(plain) > 100
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-4, atol=1e-6)


def test_unknown_config_key_is_rejected():
    with pytest.raises(TypeError, match="bogus"):
        UNet3DConditionModel(bogus=1)
    with pytest.raises(ValueError, match="use_linear_projection"):
        UNet3DConditionModel(use_linear_projection=True)
