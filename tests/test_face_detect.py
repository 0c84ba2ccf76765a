"""Face detectors (offline RetinaFace, InsightFace glue and errors) and per-frame face selection."""
from __future__ import annotations

import types
from functools import lru_cache

import cv2
import numpy as np
import pytest
import torch
from conftest import shared_path

from latentsync.face import DetectedFace, FaceDetector, FaceSelector, create_face_detector
from latentsync.face.insightface_backend import InsightFaceModelsMissing
from latentsync.face.landmarks import points3_from_landmarks5, points3_from_landmarks106


@lru_cache(maxsize=1)
def _offline():
    return create_face_detector("offline")


def _face(x1, y1, x2, y2, score=0.99) -> DetectedFace:
    box = np.array([x1, y1, x2, y2], np.float64)
    return DetectedFace(bbox=box, landmarks=np.zeros((5, 2)), score=score, points3=np.zeros((3, 2)))


# ------------------------------------------------------------------ offline backend on real media
def test_offline_detector_on_photo():
    img = cv2.cvtColor(cv2.imread(str(shared_path("media", "face_astronaut_skimage.png"))), cv2.COLOR_BGR2RGB)
    det = _offline()
    assert isinstance(det, FaceDetector)
    faces = det.detect(img)
    assert len(faces) == 1 and faces[0].score > 0.9
    f = faces[0]
    x1, y1, x2, y2 = f.bbox
    assert (f.landmarks[:, 0] > x1).all() and (f.landmarks[:, 0] < x2).all()
    assert (f.landmarks[:, 1] > y1).all() and (f.landmarks[:, 1] < y2).all()
    assert f.landmarks[0, 0] < f.landmarks[1, 0]  # image-left eye first
    assert f.points3[0, 0] < f.points3[1, 0] and f.points3[2, 1] > f.points3[0, 1]  # brows left/right, nose below
    assert np.all(f.points3[:2, 1] < f.landmarks[:2, 1])  # brows above the eyes


def test_offline_detector_finds_a_face_in_every_clip_frame():
    import av

    with av.open(str(shared_path("media", "clip_speaking_woman_frontal_350px_15fps.mp4"))) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 45
    chosen = FaceSelector().select_all(_offline().detect(f) for f in frames)
    assert all(c is not None for c in chosen)
    centres = np.array([c.center for c in chosen])
    assert np.abs(np.diff(centres, axis=0)).max() < 30  # the same face, frame to frame


def test_blank_frame_gives_no_face():
    assert _offline().detect(np.full((240, 320, 3), 90, np.uint8)) == []
    assert FaceSelector().select([]) is None


def test_points3_from_5_landmarks_is_similarity_equivariant():
    lm = np.array([[100, 100], [140, 102], [121, 125], [104, 145], [138, 146]], np.float64)
    p = points3_from_landmarks5(lm)
    ang, s, t = 0.3, 1.7, np.array([12.0, -7.0])
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]]) * s
    np.testing.assert_allclose(points3_from_landmarks5(lm @ rot.T + t), p @ rot.T + t, atol=1e-9)
    with pytest.raises(ValueError):
        points3_from_landmarks5(np.zeros((4, 2)))


def test_points3_from_106_landmarks_matches_golden():
    d = torch.load(shared_path("golden", "golden_affine.pt"), weights_only=True)
    for lmk, exp in zip(d["landmarks106"], d["landmarks3"]):
        np.testing.assert_array_equal(points3_from_landmarks106(lmk.numpy()), exp.numpy())


# ------------------------------------------------------------------ selection
def test_selection_largest_index_nearest():
    small, big, right = _face(10, 10, 70, 100), _face(100, 10, 200, 150), _face(300, 10, 380, 120)
    faces = [right, small, big]
    assert FaceSelector(track=False).select(faces) is big
    assert FaceSelector(mode="index", index=0, track=False).select(faces) is small
    assert FaceSelector(mode="index", index=2, track=False).select(faces) is right
    assert FaceSelector(mode="index", index=3, track=False).select(faces) is None
    assert FaceSelector(mode="nearest", point=(330, 50), track=False).select(faces) is right
    with pytest.raises(ValueError):
        FaceSelector(mode="nearest")
    with pytest.raises(ValueError):
        FaceSelector(mode="biggest")


def test_selection_official_filter():
    sel = FaceSelector(track=False)
    assert sel.select([_face(0, 0, 49, 100)]) is None  # w < 50
    assert sel.select([_face(0, 0, 60, 79)]) is None  # h < 80
    assert sel.select([_face(0, 0, 200, 100)]) is None  # w/h > 1.5
    assert sel.select([_face(0, 0, 50, 300)]) is None  # w/h < 0.2
    assert sel.select([_face(0, 0, 100, 120, score=0.4)]) is None
    ok = _face(0, 0, 100, 120, score=0.6)
    assert sel.select([ok]) is ok
    assert FaceSelector(official_filter=False, track=False).select([_face(0, 0, 40, 40)]) is not None


def test_selection_tracks_the_same_person():
    sel = FaceSelector(mode="nearest", point=(50, 60))
    a0, b0 = _face(10, 10, 100, 130), _face(200, 0, 350, 200)  # b is larger
    assert sel.select([b0, a0]) is a0
    a1, b1 = _face(14, 12, 104, 132), _face(198, 2, 348, 202)
    assert sel.select([b1, a1]) is a1  # stays on a, although "largest" would switch
    assert sel.select([]) is None  # a frame without a face is reported, not an error
    a2 = _face(20, 14, 110, 134)
    assert sel.select([_face(200, 0, 350, 200), a2]) is a2
    far = FaceSelector()  # largest first, then the nearest one when boxes no longer overlap
    first = far.select([_face(0, 0, 100, 120), _face(300, 0, 500, 240)])
    assert first.bbox[0] == 300
    assert far.select([_face(0, 0, 100, 120), _face(520, 0, 600, 100)]).bbox[0] == 520


# ------------------------------------------------------------------ InsightFace backend
def test_insightface_missing_files_error(tmp_path):
    (tmp_path / "det_10g.onnx").write_bytes(b"x")
    with pytest.raises(InsightFaceModelsMissing) as e:
        create_face_detector("insightface", models_dir=tmp_path)
    msg = str(e.value)
    assert "2d106det.onnx" in msg and str(tmp_path) in msg and "buffalo_l" in msg
    assert "det_10g.onnx" not in msg.split("not found")[0]  # only the missing file is listed as missing
    with pytest.raises(InsightFaceModelsMissing):
        create_face_detector("insightface", models_dir=None)
    with pytest.raises(ValueError, match="unknown face detector"):
        create_face_detector("dlib")


def test_insightface_glue_with_stand_in_models(tmp_path, monkeypatch):
    """The backend's use of insightface (get_model, prepare, detect, landmark get) with stand-in models that
    record their calls: RGB frame passed as is, det size 512, thresh 0.5, 106 points -> official points3."""
    import insightface.model_zoo as mz

    for name in ("det_10g.onnx", "2d106det.onnx"):
        (tmp_path / name).write_bytes(b"stand-in")
    rng = np.random.default_rng(0)
    lmk106 = rng.uniform(100, 200, (106, 2))
    calls = {}

    class Det:
        taskname = "detection"

        def prepare(self, ctx_id, **kw):
            calls["det_prepare"] = (ctx_id, kw)

        def detect(self, img, max_num=0, metric="default"):
            calls["frame"] = img
            return np.array([[90.0, 80.0, 210.0, 230.0, 0.93]], np.float32), None

    class Lmk:
        taskname = "landmark_2d_106"

        def prepare(self, ctx_id, **kw):
            calls["lmk_prepare"] = ctx_id

        def get(self, img, face):
            calls["lmk_bbox"] = np.asarray(face.bbox)
            face["landmark_2d_106"] = lmk106

    def fake_get_model(path, providers=None, **kw):
        calls.setdefault("providers", providers)
        return Det() if path.endswith("det_10g.onnx") else Lmk()

    monkeypatch.setattr(mz, "get_model", fake_get_model)
    det = create_face_detector("insightface", models_dir=tmp_path)
    frame = rng.integers(0, 255, (300, 320, 3), dtype=np.uint8)
    faces = det.detect(frame)
    assert calls["det_prepare"] == (-1, {"input_size": (512, 512), "det_thresh": 0.5})
    assert calls["providers"][-1] == "CPUExecutionProvider"
    assert calls["frame"] is frame or np.array_equal(calls["frame"], frame)  # no BGR conversion (quirk §8.9)
    np.testing.assert_allclose(calls["lmk_bbox"], [90, 80, 210, 230])
    assert len(faces) == 1
    np.testing.assert_array_equal(faces[0].points3, points3_from_landmarks106(lmk106))
    assert faces[0].landmarks.shape == (106, 2) and faces[0].score == pytest.approx(0.93)
