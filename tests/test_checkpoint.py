"""U-Net checkpoint I/O: official format, safetensors, strict key checks, safe unpickling, config inference."""
from __future__ import annotations

import collections

import pytest
import torch

from latentsync.config import unet_config
from latentsync.models import CheckpointError, UNet3DConditionModel, infer_unet_config, load_unet, \
    load_unet_state_dict, save_unet_checkpoint
from latentsync.models.checkpoint import load_state_dict_into_unet
from latentsync.models.tiny import random_tiny_unet, tiny_unet_config

ARCH_KEYS = ("block_out_channels", "in_channels", "out_channels", "cross_attention_dim", "add_audio_layer",
             "use_motion_module", "motion_module_decoder_only", "motion_module_mid_block", "layers_per_block",
             "down_block_types", "up_block_types")


class NotATensor:
    """A custom class: a pickle holding an instance of it must be refused."""

    def __init__(self):
        self.payload = "anything"


@pytest.fixture(scope="module")
def tiny():
    return random_tiny_unet(torch.Generator().manual_seed(0))


def _assert_same_state(a: dict, b: dict):
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_round_trip_is_bit_identical(tiny, tmp_path, suffix):
    path = save_unet_checkpoint(tiny, tmp_path / f"unet{suffix}", global_step=1234)
    if suffix == ".pt":
        raw = torch.load(path, weights_only=True)
        assert set(raw) == {"state_dict", "global_step"} and raw["global_step"] == 1234
    loaded = load_unet(path)  # config inferred from the file
    assert loaded.config["block_out_channels"] == [32, 32, 32, 32]
    assert loaded.device.type == "cpu"
    _assert_same_state(loaded.state_dict(), tiny.state_dict())
    assert not list(tmp_path.glob("*.tmp"))


def test_bare_state_dict_and_dtype(tiny, tmp_path):
    path = tmp_path / "bare.pt"
    torch.save(tiny.state_dict(), path)
    loaded = load_unet(path, config=tiny.config, dtype=torch.bfloat16)
    assert loaded.dtype == torch.bfloat16
    got = loaded.state_dict()
    for k, v in tiny.state_dict().items():
        assert torch.equal(got[k], v.to(torch.bfloat16)), k


def test_missing_pe_buffers_are_recomputed(tiny, tmp_path):
    state = {k: v for k, v in tiny.state_dict().items() if not k.endswith("pos_encoder.pe")}
    assert len(state) == len(tiny.state_dict()) - 40
    path = save_unet_checkpoint(state, tmp_path / "nope.pt")
    _assert_same_state(load_unet(path).state_dict(), tiny.state_dict())


def test_wrong_key_is_named(tiny, tmp_path):
    state = collections.OrderedDict(tiny.state_dict())
    state["conv_in.weightx"] = state.pop("conv_in.weight")
    path = save_unet_checkpoint(state, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError) as info:
        load_unet(path, config=tiny.config)
    message = str(info.value)
    assert "missing keys 1: conv_in.weight" in message and "unexpected keys 1: conv_in.weightx" in message


def test_shape_mismatch_and_many_keys_are_reported(tiny, tmp_path):
    state = dict(tiny.state_dict())
    state["conv_out.weight"] = torch.zeros(4, 16, 3, 3)
    for k in [k for k in state if k.startswith("mid_block.")]:
        del state[k]
    path = save_unet_checkpoint(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as info:
        load_unet(path, config=tiny.config)
    message = str(info.value)
    assert "conv_out.weight (file (4, 16, 3, 3), model (4, 32, 3, 3))" in message
    assert "missing keys" in message and "more)" in message and str(path) in message


def test_pickle_with_custom_object_is_refused(tiny, tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": tiny.state_dict(), "extra": NotATensor()}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_unet_state_dict(path)


def test_non_tensor_entries_are_refused(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"state_dict": {"conv_in.weight": torch.zeros(1), "note": "text"}}, path)
    with pytest.raises(CheckpointError, match="note"):
        load_unet_state_dict(path)


def test_missing_file_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_unet(tmp_path / "missing.pt")


@pytest.mark.parametrize("name", ["stage1", "stage2"])
def test_infer_config_from_official_layouts(name):
    with torch.device("meta"):
        state = UNet3DConditionModel(**unet_config(name)).state_dict()
    inferred = infer_unet_config(state)
    reference = unet_config(name)
    for key in ARCH_KEYS:
        assert inferred[key] == reference[key], key
    assert inferred["motion_module_kwargs"]["temporal_position_encoding_max_len"] == 24


def test_infer_config_decoder_only_and_load_in_meta(tmp_path):
    config = tiny_unet_config(motion_module_decoder_only=True, in_channels=9, cross_attention_dim=16)
    with torch.device("meta"):
        state = UNet3DConditionModel(**config).state_dict()
    inferred = infer_unet_config(state)
    assert inferred["motion_module_decoder_only"] and inferred["in_channels"] == 9
    assert inferred["cross_attention_dim"] == 16
    with torch.device("meta"):
        rebuilt = UNet3DConditionModel(**{**inferred, "attention_head_dim": 4,
                                          "motion_module_kwargs": {**inferred["motion_module_kwargs"],
                                                                   "num_attention_heads": 4}})
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in state.items()}


def test_load_into_meta_model_assigns_without_copy(tiny):
    with torch.device("meta"):
        target = UNet3DConditionModel(**tiny.config)
    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    ptr = state["conv_in.weight"].data_ptr()
    load_state_dict_into_unet(target, state, device="cpu", dtype=torch.float32)
    assert target.conv_in.weight.data_ptr() == ptr  # assigned, not copied
    assert all(p.device.type == "cpu" for p in target.parameters())
