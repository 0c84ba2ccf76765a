"""U-Net parity: `golden_tiny.pt`-format fixtures (output, CFG batch, per-block intermediates)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..models.checkpoint import load_state_dict_into_unet
from ..models.unet_3d import UNet3DConditionModel
from .report import Comparison, compare, load_fixture

TOL = 1e-4


def build_unet(fixture: dict, ops=None) -> UNet3DConditionModel:
    """The fixture's U-Net in float32 (its fp16-stored parameters are exact float32 values), eval mode; `ops`: the
    layer classes to build it from (default `torch.nn`)."""
    with torch.device("meta"):
        unet = UNet3DConditionModel.from_config(fixture["config"], ops=ops)
    state_dict = {k: v.float() for k, v in fixture["state_dict"].items()}
    load_state_dict_into_unet(unet, state_dict, device="cpu", dtype=torch.float32)
    return unet.eval()


def _record_intermediates(unet: UNet3DConditionModel, names: list[str]) -> tuple[dict, list]:
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for name in names:
        def hook(_module, _args, output, _name=name):
            captured[_name] = output[0] if isinstance(output, tuple) else output
        handles.append(unet.get_submodule(name).register_forward_hook(hook))
    return captured, handles


def check(path: str | Path, ops=None) -> list[Comparison]:
    fixture = load_fixture(path)
    unet = build_unet(fixture, ops=ops)
    results: list[Comparison] = []
    inputs = fixture["inputs"]
    names = list(fixture.get("intermediates", {}))
    captured, handles = _record_intermediates(unet, names)
    try:
        with torch.no_grad():
            out = unet(inputs["sample"], inputs["timestep"], inputs["encoder_hidden_states"])
    finally:
        for h in handles:
            h.remove()
    results.append(compare("output", out, fixture["output"], TOL))
    for name in names:
        actual = captured.get(name)
        if actual is None:
            results.append(Comparison(f"intermediates.{name}[not produced]", float("inf"), TOL))
        else:
            results.append(compare(f"intermediates.{name}", actual, fixture["intermediates"][name], TOL))
    if "case_cfg" in fixture:
        case = fixture["case_cfg"]
        with torch.no_grad():
            out = unet(case["sample"], case["timestep"], case["encoder_hidden_states"])
        results.append(compare("case_cfg.output", out, case["output"], TOL))
    return results
