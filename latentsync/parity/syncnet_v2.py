"""Parity: SyncNet-v2 evaluation against golden_syncnet_v2.pt (key manifest, forward passes with default and perturbed
BatchNorms, the MFCC front end, the offset sweep and confidence rule)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from ..eval.mfcc import MfccFrontEnd, mfcc, to_pcm16
from ..eval.sweep import distance_rows, framewise_confidence, sweep_figures
from ..eval.syncnet_v2 import SyncNetV2, load_syncnet_v2
from .report import Comparison, compare, load_fixture

FORWARD_RTOL = FORWARD_ATOL = 1e-4  # README-syncnet: forward_lip / forward_aud / forward_lipfeat
SWEEP_TOL = 1e-4
MFCC64_TOL = 1e-8
MFCC32_TOL = 2e-3


def _exact(name: str, ok: bool, detail: str = "") -> Comparison:
    return Comparison(name if ok else f"{name}[{detail}]", 0.0 if ok else float("inf"), 0.0)


def _forward(name: str, actual: torch.Tensor, expected: torch.Tensor) -> Comparison:
    """rtol 1e-4 + atol 1e-4, reported as one absolute tolerance scaled by the largest expected value."""
    return compare(name, actual, expected, FORWARD_ATOL + FORWARD_RTOL * float(expected.abs().max()))


def _manifest(fx: dict) -> list[Comparison]:
    manifest = fx["key_manifest"]
    ours = SyncNetV2().state_dict()
    keys_ok = list(ours) == list(manifest)
    wrong = [k for k in ours if k in manifest and list(ours[k].shape) != list(manifest[k])]
    params = sum(v.numel() for k, v in ours.items() if "running_" not in k and "num_batches" not in k)
    return [
        _exact("key_manifest.keys", keys_ok, f"{len(ours)} keys vs {len(manifest)}"),
        _exact("key_manifest.shapes", not wrong, ", ".join(wrong[:3])),
        compare("num_state_dict_entries", torch.tensor(len(ours)), torch.tensor(int(fx["num_state_dict_entries"])), 0),
        compare("num_parameters", torch.tensor(params), torch.tensor(int(fx["num_parameters"])), 0),
    ]


def _load(state_dict: dict, folder: Path) -> SyncNetV2:
    """Through the product's loader: the weights saved as a plain fp32 state dict file, as the official one is."""
    path = folder / "syncnet_v2.model"
    torch.save({k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}, path)
    return load_syncnet_v2(path)


def _forwards(fx: dict, folder: Path) -> list[Comparison]:
    visual = fx["inputs"]["visual"].float()
    audio = fx["inputs"]["mfcc"].float()
    results = []
    net = _load(fx["state_dict"], folder)
    with torch.no_grad():
        for name in ("forward_lip", "forward_aud", "forward_lipfeat"):
            x = audio if name == "forward_aud" else visual
            results.append(_forward(name, getattr(net, name)(x), fx["outputs"][name]))
    bn = fx["bn_perturbed"]
    net = _load({**fx["state_dict"], **bn["overrides"]}, folder)
    with torch.no_grad():
        results.append(_forward("bn_perturbed.forward_lip", net.forward_lip(visual), bn["forward_lip"]))
        results.append(_forward("bn_perturbed.forward_aud", net.forward_aud(audio), bn["forward_aud"]))
    return results


def _confidence(fx: dict) -> list[Comparison]:
    c = fx["confidence"]
    rows = distance_rows(c["visual_feats"], c["audio_feats"], vshift=int(c["vshift"]))
    fig = sweep_figures(rows)
    conf = framewise_confidence(rows, fig)
    fdist = rows[:, fig.min_index]
    returns = c["evaluate_returns"]
    return [
        compare("confidence.dists", rows, c["dists"], SWEEP_TOL),
        compare("confidence.mean_dists", fig.mean_dists, c["mean_dists"], SWEEP_TOL),
        compare("confidence.min_dist", torch.tensor(fig.distance), c["min_dist"], SWEEP_TOL),
        compare("confidence.minidx", torch.tensor(fig.min_index), c["minidx"], 0),
        compare("confidence.av_offset", torch.tensor(fig.offset), c["av_offset"], 0),
        compare("confidence.conf", torch.tensor(fig.confidence), c["conf"], SWEEP_TOL),
        compare("confidence.fdist", fdist, c["fdist"], SWEEP_TOL),
        compare("confidence.fconf", fig.median - fdist, c["fconf"], SWEEP_TOL),
        compare("confidence.framewise_conf", conf, c["framewise_conf"], SWEEP_TOL),
        compare("confidence.evaluate_returns.offset", torch.tensor(fig.offset), torch.tensor(int(returns[0])), 0),
        compare("confidence.evaluate_returns.min_dist", torch.tensor(fig.distance), torch.tensor(returns[1]),
                SWEEP_TOL),
        compare("confidence.evaluate_returns.conf", torch.tensor(fig.confidence), torch.tensor(returns[2]), SWEEP_TOL),
        compare("confidence.offset_of_construction", torch.tensor(fig.offset),
                torch.tensor(int(c["true_offset_by_construction"])), 0),
    ]


def _mfcc(fx: dict) -> list[Comparison]:
    m = fx["mfcc_front_end"]
    pcm = m["waveform_int16"].numpy()
    rate = int(m["sample_rate"])
    ours = mfcc(pcm)
    # the float path a user's audio takes: float waveform -> 16 kHz mono int16 (identity at 16 kHz)
    requantised = to_pcm16(torch.from_numpy(pcm.astype(np.float32) / 32768.0), rate)
    front = MfccFrontEnd(pcm)
    windows = torch.stack([torch.from_numpy(front.frames(4 * v, 4 * v + 20)).float()[None]
                           for v in fx["inputs"]["mfcc_vframes"]])
    return [
        compare("mfcc_front_end.mfcc", torch.from_numpy(ours), m["mfcc"], MFCC64_TOL),
        compare("mfcc_front_end.cct", torch.from_numpy(ours).float()[None, None], m["cct"], MFCC32_TOL),
        compare("mfcc_front_end.pcm16_from_float", torch.from_numpy(requantised.astype(np.int64)),
                torch.from_numpy(pcm.astype(np.int64)), 0),
        compare("inputs.mfcc_windows", windows, fx["inputs"]["mfcc"], MFCC32_TOL),
    ]


def check(path) -> list[Comparison]:
    fx = load_fixture(path)
    with tempfile.TemporaryDirectory(prefix="syncnet-v2-parity-") as tmp:
        forwards = _forwards(fx, Path(tmp))
    return _manifest(fx) + forwards + _confidence(fx) + _mfcc(fx)
