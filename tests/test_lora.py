"""U-Net LoRA files (`latentsync.models.lora`): merging into the state dict gives what peft's adapters compute, strength
0 is the base bit for bit, a LoRA of another U-Net is refused by name, `merge_lora` writes a full checkpoint, and the
command line checks its `--lora` files before loading anything."""
from __future__ import annotations

import pytest
import torch

from conftest import shared_path
from latentsync.__main__ import main as cli_main
from latentsync.models.checkpoint import load_unet, save_unet_checkpoint
from latentsync.models.lora import LoRAError, load_lora, merge_lora, parse_lora_spec, save_lora
from latentsync.models.tiny import random_tiny_unet, tiny_unet_config
from latentsync.tools.merge_lora import main as merge_main

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


@pytest.fixture(scope="module")
def base_and_lora(tmp_path_factory):
    """A tiny U-Net file, a rank-2 peft adapter on it with random (non-zero) B, the adapter's file, the adapted
    model's output on fixed inputs and peft's merged weights."""
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    folder = tmp_path_factory.mktemp("lora")
    g = torch.Generator().manual_seed(0)
    unet = random_tiny_unet(g)
    base = save_unet_checkpoint(unet, folder / "unet.pt")
    inject_adapter_in_model(LoraConfig(r=2, lora_alpha=4, target_modules=TARGETS), unet)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    path = save_lora(folder / "person.safetensors", get_peft_model_state_dict(unet), rank=2, alpha=4,
                     target_modules=TARGETS, global_step=7)
    adapted = _output(unet)
    for module in unet.modules():
        if hasattr(module, "merge"):  # peft's own merge of each adapter into its layer
            module.merge()
    peft_merged = {k.replace(".base_layer", ""): v for k, v in unet.state_dict().items() if "lora_" not in k}
    return {"base": base, "lora": path, "adapted": adapted, "peft_merged": peft_merged, "folder": folder}


def _load(path, loras=()):
    return load_unet(path, config=tiny_unet_config(), loras=loras)  # head counts are not in the file's shapes


def _output(unet) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    sample, audio = torch.randn(1, 13, 2, 8, 8, generator=g), torch.randn(1, 2, 50, 24, generator=g)
    with torch.no_grad():
        return unet(sample, torch.tensor(501), audio)


def test_merged_lora_computes_what_the_peft_adapters_compute(base_and_lora):
    lora = load_lora(base_and_lora["lora"])
    assert (lora.rank, lora.alpha, lora.scale, lora.target_modules) == (2, 4.0, 2.0, TARGETS)
    assert len(lora.factors) == 288 and base_and_lora["lora"].stat().st_size < 400_000
    merged = _load(base_and_lora["base"], loras=[(base_and_lora["lora"], 1.0)])
    want = base_and_lora["peft_merged"]
    got = merged.state_dict()
    assert got.keys() == want.keys()
    for key in got:
        torch.testing.assert_close(got[key], want[key], rtol=1e-6, atol=1e-7, msg=key)
    # the merged U-Net computes what the adapters computed (up to fp32 reassociation), far from the base
    base_out, merged_out = _output(_load(base_and_lora["base"])), _output(merged)
    change = (base_and_lora["adapted"] - base_out).abs().max()
    assert change > 0.05 and (merged_out - base_and_lora["adapted"]).abs().max() < 0.05 * change


def test_strength_zero_is_the_base_exactly_and_strength_scales_the_delta(base_and_lora):
    base = _load(base_and_lora["base"]).state_dict()
    zero = _load(base_and_lora["base"], loras=[(base_and_lora["lora"], 0.0)]).state_dict()
    assert all(torch.equal(base[k], zero[k]) for k in base)
    key = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    half = _load(base_and_lora["base"], loras=[(base_and_lora["lora"], 0.5)]).state_dict()[key]
    full = _load(base_and_lora["base"], loras=[(base_and_lora["lora"], 1.0)]).state_dict()[key]
    torch.testing.assert_close(half - base[key], 0.5 * (full - base[key]), rtol=1e-5, atol=1e-7)


def test_a_lora_of_another_unet_is_refused_naming_the_module(base_and_lora, tmp_path):
    lora = load_lora(base_and_lora["lora"])
    state = _load(base_and_lora["base"]).state_dict()
    state["up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight"] = torch.zeros(32, 384)
    with pytest.raises(LoRAError, match=r"attn2\.to_k\.weight is \(32, 384\)"):
        merge_lora(state, lora)
    other = tmp_path / "sd_lora.safetensors"
    from safetensors.torch import save_file

    save_file({"x.lora_A.weight": torch.zeros(1, 1)}, str(other), metadata={"format": "pt"})
    with pytest.raises(LoRAError, match="not a LatentSync LoRA"):
        load_lora(other)


def test_lora_spec_parsing():
    assert parse_lora_spec("a/b.safetensors") == (parse_lora_spec("a/b.safetensors:1")[0], 1.0)
    path, strength = parse_lora_spec("C:/x/p.safetensors:0.5")
    assert (path.as_posix(), strength) == ("C:/x/p.safetensors", 0.5)
    assert parse_lora_spec("C:/x/p.safetensors")[1] == 1.0


def test_merge_lora_command_writes_a_full_checkpoint(base_and_lora, capsys):
    out = base_and_lora["folder"] / "merged.safetensors"
    assert merge_main(["--unet", str(base_and_lora["base"]), "--lora", f"{base_and_lora['lora']}:0.75",
                       "--out", str(out)]) == 0
    merged = _load(out).state_dict()
    direct = _load(base_and_lora["base"], loras=[(base_and_lora["lora"], 0.75)]).state_dict()
    assert merged.keys() == direct.keys() and all(torch.equal(merged[k], direct[k]) for k in merged)
    assert merge_main(["--unet", str(base_and_lora["base"]), "--lora", str(base_and_lora["lora"]),
                       "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_command_line_checks_lora_files_before_loading_models(tmp_path, capsys):
    video = shared_path("media", "clip_speaking_woman_frontal_350px_15fps.mp4")
    code = cli_main(["--video", str(video), "--out", str(tmp_path / "o.mp4"), "--models", str(tmp_path),
                     "--lora", f"{tmp_path / 'missing.safetensors'}:0.8", "--no-download"])
    assert code == 2 and "LoRA file not found" in capsys.readouterr().err
