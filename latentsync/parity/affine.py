"""Parity of face alignment / paste-back / fixed mask against golden_affine.pt (official AlignRestore, fp32)."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..face.align import FaceAligner
from ..face.landmarks import points3_from_landmarks106
from ..face.mask import load_mask
from .report import Comparison, compare, load_fixture

LINEAR_TOL = 1e-5  # the 2x2 linear part of a matrix
TRANSLATION_TOL = 5e-4  # float32 translations of hundreds of pixels: one float32 step at 512 is 6e-5 (golden README)
PIXEL_TOL = 1.0


def compare_matrices(name: str, actual: torch.Tensor, expected: torch.Tensor) -> list[Comparison]:
    """(..., 2, 3) affine matrices: linear part and translation column, each with its own tolerance."""
    return [compare(f"{name}[linear]", actual[..., :2], expected[..., :2], LINEAR_TOL),
            compare(f"{name}[translation]", actual[..., 2], expected[..., 2], TRANSLATION_TOL)]


def find_mask(fixture_path: Path) -> Path | None:
    """The official mask.png: env LATENTSYNC_MASK, else ../reference/mask.png beside the golden folder."""
    env = os.environ.get("LATENTSYNC_MASK")
    if env:
        return Path(env)
    candidate = Path(fixture_path).resolve().parent.parent / "reference" / "mask.png"
    return candidate if candidate.is_file() else None


def check(path, mask_path: str | Path | None = None) -> list[Comparison]:
    d = load_fixture(path)
    results: list[Comparison] = []
    frame = d["frame"]
    lmk3 = torch.stack([torch.from_numpy(points3_from_landmarks106(l.numpy())) for l in d["landmarks106"]])
    results.append(compare("landmarks3", lmk3, d["landmarks3"], 0.0))
    mask_file = Path(mask_path) if mask_path else find_mask(Path(path))
    for res, per in d["per_resolution"].items():
        res = int(res)
        exp = per["by_dtype"]["float32"]
        aligner = FaceAligner(res, device="cpu", dtype=torch.float32)
        results.append(compare(f"{res}/face_template", torch.from_numpy(aligner.template), per["face_template"], 0.0))
        results.append(compare(f"{res}/face_size_wh", torch.tensor(aligner.crop_wh), torch.tensor(per["face_size_wh"]), 0))
        if mask_file is not None:
            mask = load_mask(mask_file, res, channels=3, dtype=torch.float64)
            results.append(compare(f"{res}/fixed_mask", mask, per["fixed_mask"], 0.0))
        n = d["landmarks3"].shape[0]
        smooth, biases = [], []
        for k in range(n):  # one object, frames in order: the smoothing state carries over
            smooth.append(aligner.matrices(d["landmarks3"][k:k + 1].numpy())[0])
            biases.append(aligner.p_bias.clone())
        smooth = torch.stack(smooth)
        results += compare_matrices(f"{res}/matrices_smooth", smooth, exp["matrices_smooth"])
        results.append(compare(f"{res}/p_bias", torch.stack(biases), exp["p_bias"], TRANSLATION_TOL))  # a translation
        nosmooth = aligner.matrices(d["landmarks3"].numpy(), smooth=False)
        results += compare_matrices(f"{res}/matrices_nosmooth", nosmooth, exp["matrices_nosmooth"])
        frames = frame.unsqueeze(0).expand(n, -1, -1, -1)
        crops = aligner.warp_to_crop(frames, smooth)
        results.append(compare(f"{res}/aligned_faces", crops, exp["aligned_faces"], PIXEL_TOL))
        # the Lanczos resize is checked on the fixture's own crops, so it is judged on its own
        resized = aligner.resize_to_model(exp["aligned_faces"])
        results.append(compare(f"{res}/aligned_faces_resized", resized, exp["aligned_faces_resized"], PIXEL_TOL))
        # end to end: Lanczos-4 has negative lobes (gain > 1), so a 1-level crop difference can become 2
        resized_ours = aligner.resize_to_model(crops)
        results.append(compare(f"{res}/aligned_faces_resized(from our crops)", resized_ours,
                               exp["aligned_faces_resized"], 2 * PIXEL_TOL))
        faces = exp["aligned_faces"].permute(0, 3, 1, 2).float() / 127.5 - 1
        faces = faces[:, [2, 0, 1]] * 0.8
        results.append(compare(f"{res}/restore_input_face0", faces[0], exp["restore_input_face0"], 1e-6))
        restored = aligner.restore_crop(frames, faces, exp["matrices_smooth"])
        results.append(compare(f"{res}/restored", restored, exp["restored"], PIXEL_TOL))
    return results
