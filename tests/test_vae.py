"""VAE loading (diffusers folder, single LDM/diffusers file) and the batched, scaled codec."""
from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

from latentsync.tools.tiny_vae import ldm_vae_state_dict
from latentsync.vae import SCALING_FACTOR, VAECodec, VAELoadError, infer_vae_config, load_vae, sd15_vae_config

TINY = dict(  # widths change between levels, so the 1x1 shortcut convs (LDM "nin_shortcut") exist too
    block_out_channels=(32, 64, 64, 64),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    norm_num_groups=32,
    latent_channels=4,
    sample_size=32,
)


@pytest.fixture(scope="module")
def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(0)  # test-only: fixes the random init of the tiny model
    return AutoencoderKL(**TINY).eval()


def images(n: int, r: int = 32, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, r, r, generator=g) * 2 - 1


def to_ldm(state: dict[str, torch.Tensor], n_blocks: int) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL keys -> original LDM (CompVis) keys: the tiny model set's writer, checked here against
    the loader, which reads LDM files with diffusers' own converter."""
    return ldm_vae_state_dict(state, n_blocks)


def test_encode_decode_shapes_and_scaling(tiny_vae):
    codec = VAECodec(tiny_vae, sample=False)
    x = images(3)
    z = codec.encode(x)
    assert z.shape == (3, 4, 4, 4)
    with torch.no_grad():
        mean = tiny_vae.encode(x).latent_dist.mean
    torch.testing.assert_close(z, mean * SCALING_FACTOR)
    y = codec.decode(z)
    assert y.shape == (3, 3, 32, 32)
    with torch.no_grad():
        ref = tiny_vae.decode(mean).sample
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)


def test_sample_uses_generator_and_differs_from_mean(tiny_vae):
    x = images(2)
    mean = VAECodec(tiny_vae, sample=False).encode(x)
    a = VAECodec(tiny_vae, generator=torch.Generator().manual_seed(5)).encode(x)
    b = VAECodec(tiny_vae, generator=torch.Generator().manual_seed(5)).encode(x)
    c = VAECodec(tiny_vae, generator=torch.Generator().manual_seed(6)).encode(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, mean)
    # posterior sample = mean + std * eps: the deviation is of the order of the posterior std
    with torch.no_grad():
        std = tiny_vae.encode(x).latent_dist.std * SCALING_FACTOR
    ratio = ((a - mean) / std).std()
    assert 0.5 < ratio < 2.0


def test_batching_equals_unbatched(tiny_vae):
    x = images(5, r=16)
    full = VAECodec(tiny_vae, generator=torch.Generator().manual_seed(3), batch_size=5).encode(x)
    parts = VAECodec(tiny_vae, generator=torch.Generator().manual_seed(3), batch_size=2).encode(x)
    torch.testing.assert_close(full, parts, rtol=1e-5, atol=1e-6)
    d_full = VAECodec(tiny_vae, batch_size=5).decode(full)
    d_parts = VAECodec(tiny_vae, batch_size=2).decode(full)
    torch.testing.assert_close(d_full, d_parts, rtol=1e-4, atol=2e-5)  # float reassociation only


def test_codec_rejects_bad_shapes(tiny_vae):
    codec = VAECodec(tiny_vae)
    with pytest.raises(ValueError, match="encode expects"):
        codec.encode(torch.zeros(2, 32, 32))
    with pytest.raises(ValueError, match="decode expects"):
        codec.decode(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="batch_size"):
        VAECodec(tiny_vae, batch_size=0)


def test_folder_and_single_files_load_identically(tiny_vae, tmp_path):
    folder = tmp_path / "vae_folder"
    tiny_vae.save_pretrained(folder, safe_serialization=True)
    state = tiny_vae.state_dict()
    ldm = to_ldm(state, 4)
    assert any(k.startswith("encoder.down.0.block.0") for k in ldm)
    assert any("nin_shortcut" in k for k in ldm) and any(k.startswith("decoder.up.3.upsample") for k in ldm)
    save_file(ldm, str(tmp_path / "tiny-ldm.safetensors"))
    torch.save({"state_dict": {"first_stage_model." + k: v for k, v in ldm.items()}}, tmp_path / "tiny-sd.ckpt")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "tiny-diffusers.safetensors"))

    x = images(1, r=16)
    expected = VAECodec(tiny_vae, sample=False).encode(x)
    expected_dec = VAECodec(tiny_vae).decode(expected)
    for path in (folder, tmp_path / "tiny-ldm.safetensors", tmp_path / "tiny-sd.ckpt", tmp_path / "tiny-diffusers.safetensors"):
        vae = load_vae(path)
        assert list(vae.config.block_out_channels) == [32, 64, 64, 64]
        assert vae.config.layers_per_block == 2
        for k, v in vae.state_dict().items():
            torch.testing.assert_close(v, state[k], rtol=0, atol=0, msg=f"{path.name}: {k}")
        torch.testing.assert_close(VAECodec(vae, sample=False).encode(x), expected, rtol=0, atol=0)
        torch.testing.assert_close(VAECodec(vae).decode(expected), expected_dec, rtol=0, atol=0)


def test_load_vae_dtype_and_device(tiny_vae, tmp_path):
    tiny_vae.save_pretrained(tmp_path / "v")
    vae = load_vae(tmp_path / "v", device="cpu", dtype=torch.bfloat16)
    assert vae.dtype == torch.bfloat16 and not vae.training
    z = VAECodec(vae, sample=False).encode(images(1))
    assert z.dtype == torch.bfloat16


def test_sd15_config_matches_inferred_from_shapes():
    config = sd15_vae_config()
    assert config["block_out_channels"] == [128, 256, 512, 512]
    assert config["scaling_factor"] == SCALING_FACTOR
    with torch.device("meta"):
        vae = AutoencoderKL(**config)
    inferred = infer_vae_config(vae.state_dict())
    for key in ("block_out_channels", "layers_per_block", "latent_channels", "in_channels", "out_channels"):
        assert inferred[key] == config[key], key


def test_auto_batch_size(tiny_vae, monkeypatch):
    from latentsync.vae import CPU_BATCH_SIZE, MAX_BATCH_SIZE, auto_batch_size

    assert auto_batch_size(tiny_vae, 256, torch.device("cpu")) == CPU_BATCH_SIZE
    per_image = 512 * 512 * 64 * 4 * 8  # R^2 x widest full-res width x fp32 bytes x live tensors
    for free, expected in ((per_image * 5, 4), (10, 1), (per_image * 1000, MAX_BATCH_SIZE)):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None, f=free: (f, 80 << 30))
        assert auto_batch_size(tiny_vae, 512, torch.device("cuda")) == expected


def test_load_vae_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="VAE not found"):
        load_vae(tmp_path / "nope.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VAELoadError, match="config.json"):
        load_vae(tmp_path / "empty")
    save_file({"foo": torch.zeros(2)}, str(tmp_path / "junk.safetensors"))
    with pytest.raises(VAELoadError, match="not an AutoencoderKL"):
        load_vae(tmp_path / "junk.safetensors")
    (tmp_path / "weird.txt").write_text("x")
    with pytest.raises(VAELoadError, match="unsupported"):
        load_vae(tmp_path / "weird.txt")


def test_tiny_set_vae_file_holds_an_sd_vae_for_the_library_and_a_taesd_for_comfyui(tmp_path):
    """The tiny set's `vae-ft-mse-840000-ema-pruned.safetensors`: the library loads its SD-VAE keys (and ignores the
    TAESD keys beside them); a file with only the TAESD keys is refused with a message that says what it is."""
    from diffusers import AutoencoderTiny
    from safetensors.torch import load_file

    from latentsync.tools.tiny_vae import save_tiny_vae_file, taesd_state_dict

    torch.manual_seed(0)  # test-only: the random init of the two small models
    sd_vae, taesd = AutoencoderKL(**TINY).eval(), AutoencoderTiny().eval()
    path = save_tiny_vae_file(tmp_path / "vae-ft-mse-840000-ema-pruned.safetensors", sd_vae, taesd)
    keys = set(load_file(str(path)))
    assert {"vae_scale", "vae_shift", "taesd_decoder.1.weight", "encoder.conv_in.weight"} <= keys
    loaded = load_vae(path)
    saved = sd_vae.state_dict()
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v, saved[k], rtol=0, atol=0, msg=k)
    save_file(taesd_state_dict(taesd), str(tmp_path / "taesd_only.safetensors"))
    with pytest.raises(VAELoadError, match="TAESD"):
        load_vae(tmp_path / "taesd_only.safetensors")


def test_norm_group_count_comes_from_the_files_metadata(tmp_path):
    """Group counts are not in the shapes: the tiny set's file states its own (8) in the safetensors metadata, and
    the loaded VAE computes what the saved one computes; a file without the key gets SD's 32."""
    from diffusers import AutoencoderTiny

    from latentsync.tools.make_tiny import VAE_TINY
    from latentsync.tools.tiny_vae import save_tiny_vae_file

    torch.manual_seed(0)  # test-only: the random init of the small models
    sd_vae, taesd = AutoencoderKL(**VAE_TINY).eval(), AutoencoderTiny().eval()
    path = save_tiny_vae_file(tmp_path / "tiny.safetensors", sd_vae, taesd)
    loaded = load_vae(path)
    assert loaded.config.norm_num_groups == VAE_TINY["norm_num_groups"] == 8
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x).latent_dist.mean, sd_vae.encode(x).latent_dist.mean,
                                   rtol=0, atol=0)
    wide = AutoencoderKL(**TINY).eval()
    save_file(dict(wide.state_dict()), str(tmp_path / "plain.safetensors"))
    assert load_vae(tmp_path / "plain.safetensors").config.norm_num_groups == 32
    save_file(dict(wide.state_dict()), str(tmp_path / "bad.safetensors"), metadata={"norm_num_groups": "many"})
    with pytest.raises(VAELoadError, match="norm_num_groups='many' is not a whole number"):
        load_vae(tmp_path / "bad.safetensors")
