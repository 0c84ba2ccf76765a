"""Issue 9 parity: StableSyncNet (key manifests of the three real configs, golden forward), the Wav2Lip mel front
end and the U-Net training math, each through `python -m latentsync.parity KIND FILE`'s own check functions."""
from __future__ import annotations

import json
import pytest
import torch

from conftest import shared_path
from latentsync.models.checkpoint import CheckpointError
from latentsync.models.stable_syncnet import SYNCNET_CONFIGS, StableSyncNet, load_stable_syncnet, syncnet_config
from latentsync.parity import stable_syncnet, train_math, wav2lip_mel

MANIFEST_COUNTS = {"syncnet_16_pixel_attn": (266, 401_306_080), "syncnet_16_pixel": (178, 371_766_496),
                   "syncnet_16_latent": (144, 65_544_416)}


@pytest.mark.parametrize("name", SYNCNET_CONFIGS)
def test_stable_syncnet_keys_equal_the_official_manifest(name):
    manifest = json.loads(shared_path("reference", f"stable_syncnet_keys_{name[len('syncnet_'):]}.json").read_text())
    with torch.device("meta"):
        net = StableSyncNet(syncnet_config(name))
    ours = [(k, list(v.shape)) for k, v in net.state_dict().items()]
    assert ours == [(k, list(v)) for k, v in manifest["params"].items()]  # same keys, shapes and order
    assert (len(ours), sum(p.numel() for p in net.parameters())) == MANIFEST_COUNTS[name]
    assert manifest["num_parameters"] == MANIFEST_COUNTS[name][1]
    for encoder, count in manifest["num_parameters_per_encoder"].items():
        assert sum(p.numel() for p in getattr(net, encoder).parameters()) == count
    assert not list(net.buffers())


@pytest.mark.parametrize("kind,fixture", [(stable_syncnet, "golden_stable_syncnet.pt"),
                                          (wav2lip_mel, "golden_wav2lip_mel.pt"),
                                          (train_math, "golden_train_math.pt")],
                         ids=["stable_syncnet", "wav2lip_mel", "train_math"])
def test_parity_with_the_official_code(kind, fixture):
    results = kind.check(shared_path("golden", fixture))
    assert len(results) >= 9
    failed = [r.line() for r in results if not r.ok]
    assert not failed, failed


def test_parity_command_line_prints_the_common_format(capsys):
    from latentsync.parity.__main__ import main

    assert main(["wav2lip_mel", str(shared_path("golden", "golden_wav2lip_mel.pt"))]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "mel_basis max_abs_err=0 tol=0 OK" in lines
    assert all(line.endswith(" OK") and " max_abs_err=" in line for line in lines)


def test_released_format_loads_safely_and_strictly(tmp_path):
    """`{"state_dict": ...}` as the released stable_syncnet.pt, weights_only; a foreign key is refused by name."""
    fx = torch.load(shared_path("golden", "golden_stable_syncnet.pt"), weights_only=True)
    path = tmp_path / "stable_syncnet.pt"
    torch.save({"state_dict": {k: v.float() for k, v in fx["state_dict"].items()}, "global_step": 7}, path)
    net = load_stable_syncnet(path, fx["config"])
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    v, a = net(fx["inputs"]["visual"].float(), fx["inputs"]["audio"])
    assert torch.allclose(v, fx["outputs"]["vision_embeds"], atol=1e-5)
    torch.save({"state_dict": {**fx["state_dict"], "extra.weight": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="extra.weight"):
        load_stable_syncnet(path, fx["config"])
