"""Parity: StableSyncNet against golden_stable_syncnet.pt (embeddings, losses, every down block) and the real
configs' key set (built on the meta device)."""
from __future__ import annotations

import torch

from ..models.stable_syncnet import StableSyncNet, sync_loss, syncnet_config
from .report import Comparison, compare, load_fixture

TOL_NORMALISED = 1e-5
TOL_ACTIVATIONS = 1e-4  # unnormalised embeddings and intermediates (|x| up to ~70): rtol 1e-4 + atol 1e-4
TOL_LOSS = 1e-5


def _relative(name: str, actual: torch.Tensor, expected: torch.Tensor) -> Comparison:
    """max |a - e| - rtol * |e| against atol (= the allclose criterion, reported as an absolute excess)."""
    if actual.shape != expected.shape:
        return compare(name, actual, expected, TOL_ACTIVATIONS)
    excess = ((actual.double() - expected.double()).abs() - TOL_ACTIVATIONS * expected.double().abs()).max()
    return Comparison(name, max(float(excess), 0.0), TOL_ACTIVATIONS)


def check(path) -> list[Comparison]:
    fx = load_fixture(path)
    results: list[Comparison] = []
    real_name = fx.get("real_config_name", "syncnet_16_pixel_attn")
    with torch.device("meta"):
        real = StableSyncNet(syncnet_config(real_name))
    real_keys = list(real.state_dict())
    fixture_keys = list(fx["state_dict"])
    results.append(Comparison(f"state_dict_keys_vs_{real_name}",
                              float(len(set(real_keys) ^ set(fixture_keys)) + (real_keys != fixture_keys)), 0.0))

    net = StableSyncNet(fx["config"])
    net.load_state_dict({k: v.float() for k, v in fx["state_dict"].items()}, strict=True)
    net.eval()
    results.append(Comparison("num_parameters", float(abs(sum(p.numel() for p in net.parameters())
                                                          - int(fx["meta"]["num_parameters"]))), 0.0))
    captured: dict[str, torch.Tensor] = {}
    handles = [net.get_submodule(name).register_forward_hook(
        lambda _m, _i, out, _n=name: captured.__setitem__(_n, out)) for name in fx["intermediates"]]
    visual, audio = fx["inputs"]["visual"].float(), fx["inputs"]["audio"].float()
    try:
        with torch.no_grad():
            vision_raw, audio_raw = net.embed(visual, audio)
            v, a = net(visual, audio)
    finally:
        for h in handles:
            h.remove()
    out = fx["outputs"]
    results.append(compare("vision_embeds", v, out["vision_embeds"], TOL_NORMALISED))
    results.append(compare("audio_embeds", a, out["audio_embeds"], TOL_NORMALISED))
    results.append(_relative("vision_embeds_unnormalized", vision_raw, out["vision_embeds_unnormalized"]))
    results.append(_relative("audio_embeds_unnormalized", audio_raw, out["audio_embeds_unnormalized"]))
    results.append(compare("cosine_similarity", torch.nn.functional.cosine_similarity(v, a),
                           out["cosine_similarity"], TOL_LOSS))
    per_sample = sync_loss(v, a)
    results.append(compare("sync_loss_train_unet_per_sample", per_sample, out["sync_loss_train_unet_per_sample"],
                           TOL_LOSS))
    results.append(compare("sync_loss_train_unet", per_sample.mean(), out["sync_loss_train_unet"], TOL_LOSS))
    labelled = sync_loss(v, a, out["train_syncnet_labels"])
    results.append(compare("train_syncnet_loss_per_sample", labelled, out["train_syncnet_loss_per_sample"],
                           TOL_LOSS))
    results.append(compare("train_syncnet_loss", labelled.mean(), out["train_syncnet_loss"], TOL_LOSS))
    for name, expected in fx["intermediates"].items():
        actual = captured.get(name)
        if actual is None:
            results.append(Comparison(f"intermediates.{name}[not produced]", float("inf"), TOL_ACTIVATIONS))
        else:
            results.append(_relative(f"intermediates.{name}", actual, expected))
    return results
