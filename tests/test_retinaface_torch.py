"""The offline RetinaFace through torch: the network against onnxruntime's raw outputs, the torch detector against the
onnxruntime detector, batches against single frames, the tracker's batched look-ahead, and where detection runs."""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
import pytest
import torch
from conftest import shared_path

from latentsync.face import FaceAligner, FaceSelector
from latentsync.face.detector import create_face_detector, describe_face_detection, offline_runtime
from latentsync.face.resize import resize_area
from latentsync.face.retinaface_backend import RetinaFaceDetector
from latentsync.face.retinaface_decode import MEAN_BGR
from latentsync.face.retinaface_net import onnx_state_dict
from latentsync.face.retinaface_torch_backend import RetinaFaceTorchDetector
from latentsync.pipeline import WINDOW, FaceTracker, TensorFrameSource, _FrameCache

# torch (float32) vs onnxruntime (float32): measured up to 6e-5 on loc / landmarks, 2e-6 on conf
RAW_ATOL = {"loc": 2e-4, "conf": 1e-5, "landmarks": 2e-4}
# decoded faces: measured up to 1.5e-4 px (1080p frames, 3x shrink) and 1e-6 on the score
PIXEL_ATOL, SCORE_ATOL = 2e-3, 1e-5


@lru_cache(maxsize=1)
def _clip() -> np.ndarray:
    import av

    with av.open(str(shared_path("media", "clip_speaking_woman_frontal_350px_15fps.mp4"))) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _photo() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(shared_path("media", "face_astronaut_skimage.png"))), cv2.COLOR_BGR2RGB)


def _blank() -> np.ndarray:
    return np.full((240, 320, 3), 90, np.uint8)


def _odd_size() -> np.ndarray:
    """Sides that are not multiples of 32: the FPN's nearest upsampling meets uneven level sizes."""
    return cv2.resize(_clip()[7], (517, 333), interpolation=cv2.INTER_AREA)


def _hd(frames: np.ndarray) -> np.ndarray:
    return np.stack([cv2.resize(f, (1920, 1080), interpolation=cv2.INTER_CUBIC) for f in frames])


@lru_cache(maxsize=1)
def _onnx() -> RetinaFaceDetector:
    return RetinaFaceDetector()


@lru_cache(maxsize=1)
def _torch() -> RetinaFaceTorchDetector:
    return RetinaFaceTorchDetector("cpu")


def _assert_same_faces(expected, actual, pixel_atol=PIXEL_ATOL, score_atol=SCORE_ATOL):
    assert len(expected) == len(actual)
    for frame_expected, frame_actual in zip(expected, actual):
        assert len(frame_expected) == len(frame_actual)
        for e, a in zip(frame_expected, frame_actual):
            np.testing.assert_allclose(a.bbox, e.bbox, rtol=0, atol=pixel_atol)
            np.testing.assert_allclose(a.landmarks, e.landmarks, rtol=0, atol=pixel_atol)
            np.testing.assert_allclose(a.points3, e.points3, rtol=0, atol=pixel_atol)
            assert abs(a.score - e.score) <= score_atol


# ------------------------------------------------------------------ the network
def test_torch_network_reproduces_onnxruntime_raw_outputs():
    net = _torch().net
    session = _onnx().session
    for img in (_clip()[0], _photo(), _blank(), _odd_size()):
        blob = np.ascontiguousarray((img[..., ::-1].astype(np.float32) - np.array(MEAN_BGR, np.float32))
                                    .transpose(2, 0, 1)[None])
        expected = dict(zip(("loc", "conf", "landmarks"), session.run(None, {"input": blob})))
        with torch.no_grad():
            actual = dict(zip(("loc", "conf", "landmarks"), net(torch.from_numpy(blob))))
        for name, value in expected.items():
            assert actual[name].shape == value.shape
            np.testing.assert_allclose(actual[name].numpy(), value, rtol=0, atol=RAW_ATOL[name], err_msg=name)


def test_weights_come_from_every_convolution_of_the_onnx_file():
    import onnx
    from retinaface.weights import WEIGHTS

    state = onnx_state_dict(WEIGHTS)
    assert len(state) == 2 * 56 and all(t.dtype == torch.float32 for t in state.values())
    model = onnx.load_from_string(WEIGHTS)
    kept = [n for n in model.graph.node if n.name != "/fpn/merge1/merge1.0/Conv"]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    with pytest.raises(ValueError, match="no convolution '/fpn/merge1/merge1.0/Conv'"):
        onnx_state_dict(model.SerializeToString())
    model = onnx.load_from_string(WEIGHTS)
    first = next(n for n in model.graph.node if n.op_type == "Conv")
    next(a for a in first.attribute if a.name == "strides").ints[:] = [1, 1]
    with pytest.raises(ValueError, match=r"stage1.0.0/Conv' has .*'strides': \(1, 1\)"):
        onnx_state_dict(model.SerializeToString())


# ------------------------------------------------------------------ the detector
def test_torch_detector_finds_the_onnx_detectors_faces():
    frames = [*_clip()[::9], _photo(), _blank(), _odd_size(), *_hd(_clip()[:1])]
    expected = [_onnx().detect(f) for f in frames]
    assert sum(len(f) for f in expected) == len(frames) - 1  # one face everywhere but the blank frame
    _assert_same_faces(expected, [_torch().detect(f) for f in frames])


def test_detect_batch_equals_detect_frame_by_frame():
    for frames in (_clip()[:4], _hd(_clip()[8:10])):
        single = [_torch().detect(f) for f in frames]
        _assert_same_faces(single, _torch().detect_batch(torch.from_numpy(frames)))
        _assert_same_faces(_onnx().detect_batch(frames), [_onnx().detect(f) for f in frames], 1e-9, 0)
    _assert_same_faces(_torch().detect_batch(_clip()[:2]), _torch().detect_batch(list(_clip()[:2])), 0, 0)
    _assert_same_faces([_torch().detect(_blank())] * 2, _torch().detect_batch([_blank(), _blank()]))
    assert _torch().detect_batch([]) == [] and _onnx().detect_batch([]) == []


@pytest.mark.parametrize("detector", [_onnx, _torch])
def test_detect_batch_rejects_mixed_sizes_and_bad_frames(detector):
    with pytest.raises(ValueError, match="one size"):
        detector().detect_batch([_blank(), _photo()])
    with pytest.raises(ValueError, match="uint8"):
        detector().detect_batch([_blank().astype(np.float32)])


def test_device_area_shrink_matches_opencv():
    frame = _clip()[0]
    for (h, w), (oh, ow) in (((1080, 1920), (360, 640)), ((700, 900), (498, 640)), ((1000, 641), (640, 410))):
        big = cv2.resize(frame, (w, h), interpolation=cv2.INTER_CUBIC)
        expected = cv2.resize(big, (ow, oh), interpolation=cv2.INTER_AREA).astype(np.int16)
        actual = resize_area(torch.from_numpy(big)[None], (oh, ow))[0].numpy().astype(np.int16)
        assert np.abs(actual - expected).max() <= 1
    with pytest.raises(ValueError, match="only shrinks"):
        resize_area(torch.zeros(1, 10, 10, 3, dtype=torch.uint8), (20, 20))


# ------------------------------------------------------------------ the tracker's batched detection
class _FrameByFrame:
    """The same detector without `detect_batch`: the tracker detects one frame per call."""

    def __init__(self, detector):
        self.detector = detector

    def detect(self, frame):
        return self.detector.detect(frame)


class _CountingBatches(_FrameByFrame):
    def __init__(self, detector):
        super().__init__(detector)
        self.batches: list[int] = []

    def detect_batch(self, frames):
        self.batches.append(len(frames))
        return self.detector.detect_batch(frames)


def _track(detector, frames: np.ndarray) -> FaceTracker:
    source = TensorFrameSource(torch.from_numpy(frames), fps=15)
    tracker = FaceTracker(_FrameCache(source, WINDOW + 8), detector, FaceAligner(64), FaceSelector(), max_gap=2)
    for end in range(WINDOW - 1, len(frames) + WINDOW - 1, WINDOW):  # as the pipeline asks, window by window
        tracker.ensure(end)
    return tracker


def test_tracker_with_batches_gives_the_frame_by_frame_result():
    frames = _clip().copy()
    frames[14:16] = 90  # a 2-frame gap (grey frames) across the first window's end: look-ahead past it
    frames[30:34] = 0  # a gap longer than max_gap
    batched = _CountingBatches(_onnx())
    expected, actual = _track(_FrameByFrame(_onnx()), frames), _track(batched, frames)
    assert max(batched.batches) == WINDOW and sum(batched.batches) == len(frames)
    assert len(batched.batches) > len(frames) // WINDOW  # the look-ahead in the gap went frame by frame
    np.testing.assert_array_equal(actual.status, expected.status)
    assert torch.equal(actual.matrices, expected.matrices)
    assert torch.equal(actual.boxes.nan_to_num(-1), expected.boxes.nan_to_num(-1))
    assert actual.final == expected.final == len(frames)


# ------------------------------------------------------------------ where it runs
def test_offline_detector_runs_through_torch_on_cuda_and_mps_only():
    for device in ("cuda", "cuda:1", torch.device("cuda", 0), "mps"):
        assert offline_runtime(device) == "torch"
        assert "through torch" in describe_face_detection("offline", device)
    assert offline_runtime("cpu") == offline_runtime(torch.device("cpu")) == "onnxruntime"
    assert describe_face_detection("offline", "cpu") == "face detection on the CPU (onnxruntime)"
    assert describe_face_detection("insightface", "mps") == "face detection on the CPU (onnxruntime)"
    assert type(create_face_detector("offline", device="cpu")) is RetinaFaceDetector
