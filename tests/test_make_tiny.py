"""The tiny random model set: layout, loadability with the real loaders, determinism, safety."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from latentsync import hub
from latentsync.tools.make_tiny import EXTRA_FILES, make_tiny_model_set, main

REPO = Path(__file__).resolve().parents[1]
OFFICIAL_256 = sorted([  # what fetch_models puts in a models folder for 1.5 (InsightFace aside)
    hub.unet_file("1.5").relpath, hub.WHISPER_FILE.relpath, hub.MASK_FILE.relpath, hub.VAE_FILE.relpath,
])
EXTRAS_256 = ["TINY_MODEL_SET.txt", "latentsync/v1.5/unet_config.yaml", *(e.relpath for e in EXTRA_FILES)]
LAYOUT_256 = sorted(OFFICIAL_256 + EXTRAS_256)


@pytest.fixture(scope="module")
def tiny_cli(tmp_path_factory) -> Path:
    """The tool run as a user would: ``python -m latentsync.tools.make_tiny --out DIR --seed 3``."""
    out = tmp_path_factory.mktemp("tiny_cli") / "models"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run = subprocess.run(
        [sys.executable, "-m", "latentsync.tools.make_tiny", "--out", str(out), "--seed", "3"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "tiny random model set (v1.5)" in run.stdout
    return out


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def tensors(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    flat: dict[str, torch.Tensor] = {}

    def walk(key: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{key}.{k}" if key else str(k), v)
        else:
            flat[key] = value

    walk("", obj)
    return flat


def test_layout_and_marker(tiny_cli):
    """The official layout file for file under the official names (the shipped workflows name them), plus extras."""
    assert OFFICIAL_256 == ["latentsync/mask.png", "latentsync/v1.5/latentsync_unet.pt", "latentsync/whisper/tiny.pt",
                            "vae/vae-ft-mse-840000-ema-pruned.safetensors"]
    assert files_under(tiny_cli) == LAYOUT_256
    assert "random" in (tiny_cli / "TINY_MODEL_SET.txt").read_text().lower()
    models = hub.locate_model_set(tiny_cli, "1.5", download=True)  # tiny: no download is ever attempted
    assert models.is_tiny and models.insightface_dir is None
    assert models.unet == tiny_cli / "latentsync/v1.5/latentsync_unet.pt"
    assert models.unet_config == tiny_cli / "latentsync/v1.5/unet_config.yaml"
    assert models.vae == tiny_cli / "vae/vae-ft-mse-840000-ema-pruned.safetensors"


def test_loads_with_the_real_loaders_and_runs(tiny_cli):
    import yaml

    from latentsync.audio.whisper_encoder import WhisperAudioEncoder
    from latentsync.face.mask import load_mask
    from latentsync.models.checkpoint import load_unet
    from latentsync.vae import VAECodec, load_vae

    raw = torch.load(tiny_cli / "latentsync/v1.5/latentsync_unet.pt", map_location="cpu", weights_only=True)
    assert set(raw) == {"state_dict"}  # official format
    config = yaml.safe_load((tiny_cli / "latentsync/v1.5/unet_config.yaml").read_text())
    unet = load_unet(tiny_cli / "latentsync/v1.5/latentsync_unet.pt", config=config)
    unet_inferred = load_unet(tiny_cli / "latentsync/v1.5/latentsync_unet.pt")  # config read from shapes alone
    assert unet_inferred.config["block_out_channels"] == config["block_out_channels"] == [32, 32, 32, 32]
    heads = {"attention_head_dim", "motion_module_kwargs"}  # head counts are not in the shapes: the yaml has them
    assert {k: v for k, v in unet_inferred.config.items() if k not in heads and k in config} == \
        {k: v for k, v in config.items() if k not in heads}
    assert (config["attention_head_dim"], config["motion_module_kwargs"]["num_attention_heads"]) == (1, 1)
    assert unet_inferred.config["attention_head_dim"] == 8  # what a checkpoint without its yaml gets: the official
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 13, 2, 16, 16, generator=g)
    audio = torch.randn(1, 2, 50, 384, generator=g)
    with torch.no_grad():
        y = unet(x, torch.tensor(501), audio)
    assert y.shape == (1, 4, 2, 16, 16) and torch.isfinite(y).all() and y.std() > 0

    encoder = WhisperAudioEncoder.from_file(tiny_cli / "latentsync/whisper/tiny.pt", device="cpu")
    feats = encoder.features(0.1 * torch.randn(16000, generator=g))
    assert feats.shape == (50, 5, 384) and torch.isfinite(feats).all()

    vae = load_vae(tiny_cli / "vae/vae-ft-mse-840000-ema-pruned.safetensors")  # its SD-VAE keys
    assert list(vae.config.block_out_channels) == [8, 8, 8, 8]
    assert vae.config.norm_num_groups == 8  # from the file's metadata (a file without it gets SD's 32)
    codec = VAECodec(vae, generator=torch.Generator().manual_seed(1))
    z = codec.encode(torch.rand(1, 3, 256, 256, generator=g) * 2 - 1)
    assert z.shape == (1, 4, 32, 32)
    assert codec.decode(z).shape == (1, 3, 256, 256)

    mask = load_mask(tiny_cli / "latentsync/mask.png", 256)
    assert mask.shape == (256, 256) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert 0.2 < (mask == 0).float().mean() < 0.6  # a lower-face region is to be regenerated
    assert mask[:64].min() == 1 and mask[200, :].min() == 0


def test_same_seed_same_tensors_and_no_global_rng_use(tiny_cli, tmp_path):
    state = torch.get_rng_state()
    make_tiny_model_set(tmp_path / "again", resolution=256, seed=3)
    assert torch.equal(torch.get_rng_state(), state), "make_tiny must not consume the global RNG"
    weight_files = [f for f in LAYOUT_256 if f.endswith((".pt", ".safetensors"))]
    for rel in weight_files:
        a, b = tensors(tiny_cli / rel), tensors(tmp_path / "again" / rel)
        assert a.keys() == b.keys(), rel
        for k in a:
            if isinstance(a[k], torch.Tensor):
                assert torch.equal(a[k], b[k]), f"{rel}: {k}"
            else:
                assert a[k] == b[k], f"{rel}: {k}"
    for rel in ("latentsync/mask.png", "latentsync/v1.5/unet_config.yaml"):
        assert (tiny_cli / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes(), rel
    other = tensors(tiny_cli / "latentsync/v1.5/latentsync_unet.pt")
    make_tiny_model_set(tmp_path / "seed4", resolution=256, seed=4)
    changed = tensors(tmp_path / "seed4/latentsync/v1.5/latentsync_unet.pt")
    assert not torch.equal(other["state_dict.conv_in.weight"], changed["state_dict.conv_in.weight"])


def test_512_goes_to_v16(tmp_path):
    models = make_tiny_model_set(tmp_path, resolution=512, seed=0)
    assert models.version == "1.6" and models.is_tiny
    assert (tmp_path / "latentsync/v1.6/latentsync_unet.pt").is_file()
    assert not (tmp_path / "latentsync/v1.5").exists()


def test_refuses_to_overwrite(tiny_cli, capsys):
    before = {f: (tiny_cli / f).stat().st_mtime_ns for f in LAYOUT_256}
    assert main(["--out", str(tiny_cli)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert before == {f: (tiny_cli / f).stat().st_mtime_ns for f in LAYOUT_256}
    with pytest.raises(ValueError, match="256"):
        make_tiny_model_set(tiny_cli / "x", resolution=300)
