"""Face alignment / paste-back / mask: parity with the official AlignRestore and checks on real faces."""
from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path

import cv2
import kornia
import numpy as np
import pytest
import torch
from conftest import shared_path

from latentsync.face import FaceAligner, FaceSelector, create_face_detector, load_mask, synthetic_mouth_mask
from latentsync.face.landmarks import BROW_X, BROW_Y
from latentsync.face.mask import MASK_SHA256, MaskError, verify_mask
from latentsync.face.paste import erode_rect, soft_paste_mask
from latentsync.parity import affine


def _mask_path() -> Path:
    env = os.environ.get("LATENTSYNC_MASK")
    return Path(env) if env else shared_path("reference", "mask.png")


# ------------------------------------------------------------------ parity
def test_affine_parity_all_ok():
    results = affine.check(shared_path("golden", "golden_affine.pt"), mask_path=_mask_path())
    names = [r.name for r in results]
    for res in (256, 512):
        for key in ("fixed_mask", "matrices_smooth[linear]", "matrices_smooth[translation]", "p_bias",
                    "matrices_nosmooth[linear]", "matrices_nosmooth[translation]", "aligned_faces",
                    "aligned_faces_resized", "restored"):
            assert f"{res}/{key}" in names
    bad = [r.line() for r in results if not r.ok]
    assert not bad, bad


def test_affine_parity_detects_perturbation(tmp_path):
    d = torch.load(shared_path("golden", "golden_affine.pt"), weights_only=True)
    exp = d["per_resolution"][256]["by_dtype"]["float32"]
    exp["matrices_smooth"][2, 0, 2] += 1e-3  # translation: tolerance 5e-4
    exp["matrices_nosmooth"][3, 1, 0] += 3e-5  # linear part: tolerance 1e-5
    exp["aligned_faces"][1, 100, 100, 0] ^= 8
    exp["restored"][0, 150, 200, 1] ^= 16
    d["landmarks106"][0, 43, 0] += 5  # moves the rounded brow mean by 1 px
    path = tmp_path / "perturbed.pt"
    torch.save(d, path)
    results = {r.name: r for r in affine.check(path, mask_path=_mask_path())}
    for name in ("landmarks3", "256/matrices_smooth[translation]", "256/matrices_nosmooth[linear]",
                 "256/aligned_faces", "256/restored"):
        assert not results[name].ok, name
    assert results["512/matrices_smooth[translation]"].ok and results["256/matrices_smooth[linear]"].ok


# ------------------------------------------------------------------ pieces
@pytest.mark.parametrize("size", [0, 1, 2, 3, 6, 7, 16])
def test_erode_rect_matches_cv2(size):
    rng = np.random.default_rng(size)
    m = (rng.random((40, 53)) > 0.2).astype(np.float32) * rng.random((40, 53)).astype(np.float32)
    kernel = np.ones((size, size), np.uint8) if size else np.ones((0, 0), np.uint8)
    expected = cv2.erode(m, kernel)
    got = erode_rect(torch.from_numpy(m)[None, None], size, use_cv2=False)[0, 0].numpy()  # the torch path
    np.testing.assert_array_equal(got, expected)


def test_mask_loading_and_verification(tmp_path):
    path = _mask_path()
    verify_mask(path)
    m256 = load_mask(path, 256)
    assert m256.shape == (256, 256) and m256.dtype == torch.float32
    assert set(torch.unique(m256).tolist()) == {0.0, 1.0}  # binary at 256
    assert 0.35 < float((m256 == 0).float().mean()) < 0.45  # ~40.7 % regenerated
    m512 = load_mask(path, 512, channels=3)
    assert m512.shape == (3, 512, 512) and torch.unique(m512).numel() > 2  # soft edge at 512
    other = tmp_path / "mask.png"
    cv2.imwrite(str(other), np.full((256, 256, 3), 255, np.uint8))
    with pytest.raises(MaskError, match=MASK_SHA256):
        verify_mask(other)
    with pytest.raises(MaskError, match="not found"):
        load_mask(tmp_path / "missing.png", 256)


def test_synthetic_mask_is_a_lower_face_hole():
    m = synthetic_mouth_mask(256)
    assert m.shape == (256, 256)
    assert set(torch.unique(m).tolist()) == {0.0, 1.0}
    assert m[:90].min() == 1 and m[250:].min() == 1  # eyes and bottom edge kept
    assert m[200, 128] == 0 and m[200, 20] == 0 and m[100, 20] == 1  # wide at the mouth, narrow at the nose


def test_fp16_on_cpu_is_refused():
    with pytest.raises(ValueError, match="float16"):
        FaceAligner(256, device="cpu", dtype=torch.float16)


def test_smoothing_state_carries_over_and_resets():
    pts = np.array([[[100, 100], [160, 98], [131, 140]], [[102, 101], [161, 99], [133, 141]]], np.float64)
    a = FaceAligner(256)
    both = a.matrices(pts)
    a.reset()
    first = a.matrices(pts[:1])
    second = a.matrices(pts[1:])
    torch.testing.assert_close(torch.cat([first, second]), both, rtol=0, atol=0)
    a.reset()
    alone = a.matrices(pts[1:])
    assert not torch.equal(alone, second)  # the bias of frame 0 entered frame 1


# ------------------------------------------------------------------ real faces
@lru_cache(maxsize=1)
def _photo() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(shared_path("media", "face_astronaut_skimage.png"))), cv2.COLOR_BGR2RGB)


@lru_cache(maxsize=1)
def _clip() -> np.ndarray:
    import av

    with av.open(str(shared_path("media", "clip_speaking_woman_frontal_350px_15fps.mp4"))) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@lru_cache(maxsize=1)
def _detector():
    return create_face_detector("offline")


def _expected_eyes_256() -> np.ndarray:
    """Where the 5-point derivation + template put the eyes in the 256x256 face (analytic, no data):
    brows sit BROW_Y*d above the eyes, 2*BROW_X*d apart, and the template puts them 41*2.8 px apart at y=56."""
    px_per_d = 41 * 2.8 / (2 * BROW_X)  # crop pixels per inter-ocular distance
    y = 56 + BROW_Y * px_per_d
    xs = 105 + np.array([-0.5, 0.5]) * px_per_d
    return np.stack([xs * 256 / 210, np.full(2, y * 256 / 280)], 1)


def _landmarks_in_face(landmarks: np.ndarray, matrix: torch.Tensor, res: int = 256) -> np.ndarray:
    """(K, 2) frame landmarks -> positions in the R x R model face (crop coords, then the non-uniform resize)."""
    p = np.hstack([landmarks, np.ones((len(landmarks), 1))]) @ matrix.double().numpy().T
    return p * [res / (75 * res / 256 * 2.8), res / (100 * res / 256 * 2.8)]


def test_aligned_crop_places_eyes_and_mouth():
    """Offline detector on the photo and on every clip frame: the eyes land at the template's eye places within
    4 px (at 256); the mouth corners are horizontally centred within 8 px and inside the mask's regenerated
    region; along the clip the mouth centre stays within 10 px of its median (speech moves the lips)."""
    mask = load_mask(_mask_path(), 256).numpy()
    eyes_exp = _expected_eyes_256()
    frames = [_photo()] + list(_clip())
    selector = FaceSelector()
    aligner = FaceAligner(256)
    mouths, worst_eye = [], 0.0
    for i, frame in enumerate(frames):
        if i == 1:
            selector.reset()
            aligner.reset()
        face = selector.select(_detector().detect(frame))
        assert face is not None, f"no face in frame {i}"
        m = aligner.align(frame, face.points3[None]).matrices[0]
        pts = _landmarks_in_face(face.landmarks, m)
        eye_err = np.linalg.norm(pts[:2] - eyes_exp, axis=1).max()
        worst_eye = max(worst_eye, eye_err)
        assert eye_err < 4.0, (i, pts[:2], eyes_exp)
        mouth_center_x = pts[3:, 0].mean()
        assert abs(mouth_center_x - 128) < 8.0, (i, pts[3:])
        for x, y in pts[3:]:
            assert mask[int(round(y)), int(round(x))] == 0, (i, x, y)
        if i > 0:
            mouths.append(pts[3:])
    mouths = np.array(mouths)  # (45, 2 corners, 2)
    centres = mouths.mean(axis=1)
    spread = np.linalg.norm(centres - np.median(centres, axis=0), axis=1).max()
    corner_spread = np.linalg.norm(mouths - np.median(mouths, axis=0), axis=2).max()
    assert spread < 10.0, spread
    print(f"worst eye error {worst_eye:.2f} px, clip mouth-centre spread {spread:.2f} px, "
          f"corner spread {corner_spread:.2f} px")


@pytest.mark.parametrize("res", [256, 512])
def test_paste_back_of_unchanged_face(res):
    """restore(align(frame)) on the real photo: pixels outside the soft-mask footprint are untouched (exact);
    inside, the four resamplings (warp, Lanczos, bicubic, inverse warp) and two truncations of the official
    recipe cost <= 2 levels on smooth content (photo blurred, sigma 6) and on average < 2 levels on the sharp
    photo (mean over channel values). The 1-px ring at the footprint edge is excluded: the official face warp fills with 127, which becomes
    white after the [-1, 1] -> 255 mapping, and the soft mask is not yet 0 there on the right/bottom edge."""
    photo = _photo()
    face = _detector().detect(photo)[0]
    for name, src in (("smooth", cv2.GaussianBlur(photo, (0, 0), 6)), ("sharp", photo)):
        aligner = FaceAligner(res)
        batch = aligner.align(src, face.points3[None])
        faces = batch.faces.permute(0, 3, 1, 2).float() / 127.5 - 1
        out = aligner.restore(src[None], faces, batch.matrices)[0].numpy().astype(int)
        diff_c = np.abs(out - src.astype(int))  # per channel value
        diff = diff_c.max(-1)
        inv = kornia.geometry.transform.invert_affine_transform(batch.matrices[:1])
        hard, soft = soft_paste_mask((aligner.crop_wh[1], aligner.crop_wh[0]), inv, photo.shape[:2], torch.float32)
        soft = soft[0, 0].numpy()
        interior = cv2.erode((hard[0, 0].numpy() >= 1).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        assert (soft > 0).sum() > 5000
        assert diff[soft == 0].max() == 0, name
        if name == "smooth":
            assert diff[interior].max() <= 2, (name, diff[interior].max())
        else:
            assert diff_c[interior].mean() < 2.0, (name, diff_c[interior].mean())
        print(f"{res} {name}: interior max {diff[interior].max()} mean per channel {diff_c[interior].mean():.2f}, "
              f"edge ring max {diff[(soft > 0) & ~interior].max()}")


def test_warp_reads_only_the_region_the_crop_samples_within_one_level_of_the_whole_frame_warp():
    """warp_to_crop converts only the crop footprint's bounding box to float: the same crops as kornia's warp of the
    whole frame within the ±1 level of truncation, for a 1,000 px face, rotated ones, one partly and one wholly
    outside the frame."""
    aligner = FaceAligner(256)
    w, h = aligner.crop_wh
    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (6, 1080, 1920, 3), dtype=torch.uint8, generator=gen)
    cases = [(1 / 3.6, 0.05, 500, 40), (1 / 3.3, -0.1, 700, 100), (1 / 1.3, 0.3, 30, 10), (1.0, 0.0, -150, 900),
             (1.0, 0.0, -5000, 0), (1 / 4, 0.7, 1700, 1000)]
    matrices = torch.tensor([[[s * math.cos(a), -s * math.sin(a), -tx * s], [s * math.sin(a), s * math.cos(a),
                                                                             -ty * s]] for s, a, tx, ty in cases],
                            dtype=torch.float32)
    whole = kornia.geometry.transform.warp_affine(
        frames.permute(0, 3, 1, 2).float(), matrices, (h, w), mode="bilinear", padding_mode="fill",
        fill_value=torch.full((3,), 127.0), align_corners=True).permute(0, 2, 3, 1).to(torch.uint8)
    diff = (aligner.warp_to_crop(frames, matrices).int() - whole.int()).abs()
    assert int(diff.max()) <= 1
    assert int((diff[4] > 0).sum()) == 0 and bool((whole[4] == 127).all())  # outside the frame: all fill
