"""Overlapped windows (issue 13): the same frames as the serial run, Cancel and errors in every stage leave nothing
behind, the device-side resize and the paste-back from prepared masks stay within the stated tolerances, and the
report counts the frames decoded (ping-pong and loop read a source frame at most twice).

The pipeline is the real one on the shared clip (45 frames, 350x350, one keyframe) with the tiny random models at a
64 px face size and the real offline detector; detections are memoised per frame content, so the second run of a
comparison pays only for the model and the paste-back.
"""
from __future__ import annotations

import hashlib
import math
import threading
import time
import weakref

import cv2
import kornia
import numpy as np
import pytest
import torch

import media_factory as mf
from conftest import shared_path
from latentsync.audio.whisper_encoder import WhisperAudioEncoder
from latentsync.face.align import FaceAligner
from latentsync.face.detector import create_face_detector
from latentsync.face.mask import synthetic_mouth_mask
from latentsync.face.paste import footprint_roi, soft_paste_mask
from latentsync.face.resize import resize_lanczos4
from latentsync.hub import VAE_NAME, read_unet_config
from latentsync.models.checkpoint import load_unet
from latentsync.overlap import run_stages
from latentsync.pipeline import LipSyncPipeline, TensorSink
from latentsync.vae import VAECodec, load_vae
from latentsync.video_io import MediaError, VideoFileSource, VideoWriter, read_audio

R = 64
CLIP_FRAMES = 45


class MemoDetector:
    """The real detector, each distinct frame detected once (the result depends only on the pixels)."""

    def __init__(self, detector):
        self.detector, self.memo = detector, {}

    def detect(self, frame):
        key = hashlib.sha1(np.ascontiguousarray(frame).tobytes()).hexdigest()
        if key not in self.memo:
            self.memo[key] = self.detector.detect(frame)
        return self.memo[key]


@pytest.fixture(scope="module")
def models(tiny_model_set):
    m = tiny_model_set
    unet = load_unet(m / "latentsync/v1.5/latentsync_unet.pt",
                     config=read_unet_config(m / "latentsync/v1.5/unet_config.yaml")).eval()
    encoder = WhisperAudioEncoder.from_file(m / "latentsync/whisper/tiny.pt", device="cpu")
    return unet, encoder, load_vae(m / "vae" / VAE_NAME)


@pytest.fixture(scope="module")
def detector():
    return MemoDetector(create_face_detector("offline"))


def make_pipe(models, detector, **swap) -> LipSyncPipeline:
    unet, encoder, vae = models
    parts = dict(unet=unet, vae_codec=VAECodec(vae), audio_encoder=encoder, face_detector=detector,
                 mask=synthetic_mouth_mask(R), resolution=R)
    parts.update(swap)
    return LipSyncPipeline(**parts)


@pytest.fixture(scope="module")
def speech():
    wave, rate = read_audio(shared_path(*mf.SPEECH))
    return wave, rate


def clip_path():
    return shared_path(*mf.CLIP)


def stream(pipe, seconds: float, speech, mode: str = "pingpong", overlap: bool = True, **kw):
    """The shared clip lip-synced to the first `seconds` of the speech (padded with silence past its end):
    (report, frames uint8)."""
    wave, rate = speech
    samples = round(seconds * rate)
    wave = torch.nn.functional.pad(wave[:, :samples], (0, max(0, samples - wave.shape[1])))
    with VideoFileSource(clip_path()) as source:
        plan = pipe.plan(source.timing, wave, rate, mode)
        sink = TensorSink(len(plan), source.frame_size)
        report = pipe.run(source, plan, wave, rate, sink, steps=1, guidance=1.0, seed=3, overlap=overlap, **kw)
    return report, sink.frames


def stage_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("latentsync-")]


# (mode, audio seconds): the clip is 3 s; longer audio makes ping-pong run back and loop start again
MODES = [("pingpong", 3.8), ("loop", 3.8), ("freeze", 3.4), ("cut_off", 1.2), ("silence", 1.2)]


@pytest.mark.parametrize("mode, seconds", MODES, ids=[m for m, _ in MODES])
def test_overlapped_equals_serial_frame_for_frame(models, detector, speech, mode, seconds):
    pipe = make_pipe(models, detector)
    serial_report, serial = stream(pipe, seconds, speech, mode, overlap=False)
    report, overlapped = stream(pipe, seconds, speech, mode, overlap=True)
    assert torch.equal(overlapped, serial)
    timings = {"stage_seconds"}  # the busy seconds of each stage: measured, not the same twice
    assert ({k: v for k, v in report.to_dict().items() if k not in timings}
            == {k: v for k, v in serial_report.to_dict().items() if k not in timings})
    assert set(report.to_dict()["stage_seconds"]) == {"prepare", "model", "finish"}
    assert report.coverage()["processed"] > 0.9 * len(report.plan)
    assert stage_threads() == []
    decoded = report.decoded_frames
    if mode in ("pingpong", "loop"):  # 57 output frames of 45 source frames: the source is read once more, at most
        assert len(report.plan) == 57 and decoded <= 2 * CLIP_FRAMES, decoded
    else:  # read once, up to the last frame shown and the detection's look-ahead
        assert decoded <= CLIP_FRAMES and decoded >= int(report.plan.source.max()) + 1, decoded


def test_pingpong_and_loop_decode_counts_in_the_report(models, detector, speech):
    """A long ping-pong (there, back and there again) reads each source frame at most once per pass; a long loop
    about once per pass."""
    pipe = make_pipe(models, detector)
    report, _ = stream(pipe, 9.0, speech, "pingpong")  # 135 output frames: 45 forward, 45 back, 45 forward
    passes = math.ceil(len(report.plan) / CLIP_FRAMES)
    assert report.to_dict()["decoded_frames"] == report.decoded_frames <= passes * CLIP_FRAMES
    loop_report, _ = stream(pipe, 9.0, speech, "loop")
    # a loop restarts at frame 0 inside a window, and frames the cache let go since are decoded again (170 for the
    # 135 frames shown, measured)
    assert loop_report.decoded_frames <= 1.3 * len(loop_report.plan)


class Cancelled(Exception):
    pass


def test_cancel_mid_run_leaves_no_thread_and_no_file(models, detector, speech, tmp_path):
    pipe = make_pipe(models, detector)
    calls = []

    def progress(done, total):
        calls.append(done)
        if done > total // 2:
            raise Cancelled("cancelled by the user")

    wave, rate = speech
    out = tmp_path / "out.mp4"
    with VideoFileSource(clip_path()) as source:
        plan = pipe.plan(source.timing, wave, rate, "cut_off")
        with pytest.raises(Cancelled, match="cancelled by the user"):
            with VideoWriter(out, plan.fps, source.frame_size, audio=wave, sample_rate=rate) as writer:
                pipe.run(source, plan, wave, rate, writer, steps=4, guidance=1.5, progress=progress)
                writer.close()
    assert stage_threads() == []
    assert list(tmp_path.iterdir()) == []  # no output, no part file


class FailingSource(VideoFileSource):
    def read(self, start, stop):
        if stop > 20:
            raise MediaError("clip.mp4 could not be decoded at frame 20 (test)")
        return super().read(start, stop)


class FailingDetector:
    def __init__(self, detector):
        self.detector, self.calls = detector, 0

    def detect(self, frame):
        self.calls += 1
        if self.calls > 20:
            raise RuntimeError("the face detector failed (test)")
        return self.detector.detect(frame)


class FailingCodec(VAECodec):
    calls = 0

    def encode(self, images):
        FailingCodec.calls += 1
        if FailingCodec.calls > 2:  # the second window (masked + reference faces: two calls per window)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")
        return super().encode(images)


class FailingSink(TensorSink):
    def write(self, frames, starts=None):
        if self.count >= 16:
            raise OSError(28, "No space left on device (test)")
        super().write(frames, starts)


@pytest.mark.parametrize("stage", ["decode", "detect", "model", "encode"])
def test_an_error_in_any_stage_reaches_the_caller_with_its_message(models, detector, speech, stage):
    wave, rate = speech
    swap = {"detect": dict(face_detector=FailingDetector(detector)),
            "model": dict(vae_codec=FailingCodec(models[2]))}.get(stage, {})
    pipe = make_pipe(models, detector, **swap)
    expected = {"decode": (MediaError, "could not be decoded at frame 20"),
                "detect": (RuntimeError, "the face detector failed"),
                "model": (torch.cuda.OutOfMemoryError, "CUDA out of memory"),
                "encode": (OSError, "No space left on device")}[stage]
    source = (FailingSource if stage == "decode" else VideoFileSource)(clip_path())
    with source:
        plan = pipe.plan(source.timing, wave, rate, "cut_off")
        sink = (FailingSink if stage == "encode" else TensorSink)(len(plan), source.frame_size)
        with pytest.raises(expected[0], match=expected[1]):
            pipe.run(source, plan, wave, rate, sink, steps=1, guidance=1.0)
    assert stage_threads() == []


def test_run_stages_keeps_order_and_joins_threads_when_the_caller_fails():
    seen = []
    run_stages(range(7), lambda x: x * 10, seen.append)
    assert seen == [0, 10, 20, 30, 40, 50, 60]

    def work(x):
        if x == 3:
            raise KeyboardInterrupt
        return x

    done = []
    with pytest.raises(KeyboardInterrupt):
        run_stages(iter(range(100)), work, done.append)
    assert done == [0, 1, 2][:len(done)] and stage_threads() == []


@pytest.mark.parametrize("slow", ["work", "finish"])
def test_run_stages_keeps_at_most_three_windows_alive_at_once(slow):
    """One being prepared, one at the model, one being finished: memory is flat in the number of windows (no stage
    holds a window it has handed on, and the producer does not start one while the pipeline is full)."""
    live, most, lock = set(), [0], threading.Lock()

    def gone(k):
        with lock:
            live.discard(k)

    class Window:
        def __init__(self, k):
            with lock:
                live.add(k)
                most[0] = max(most[0], len(live))
            weakref.finalize(self, gone, k)

    def pause(window):
        time.sleep(0.02)
        return window

    def items():
        for k in range(10):
            yield Window(k)

    run_stages(items(), pause if slow == "work" else (lambda w: w), pause if slow == "finish" else (lambda w: None),
               overlap=True)
    assert most[0] == 3 and not live


# ---------------------------------------------------------------------------------------------------------------
# device-side face work, checked on the CPU against today's CPU path


def test_device_lanczos_resize_within_one_level_of_opencv():
    """The stated tolerance is 2 levels; on noise (the worst case) and on a real crop it is 1."""
    rng = np.random.default_rng(0)
    photo = cv2.cvtColor(cv2.imread(str(shared_path(*mf.PHOTO))), cv2.COLOR_BGR2RGB)
    for (h, w), r in (((280, 210), 256), ((560, 420), 512), ((280, 210), 64)):
        crops = np.stack([rng.integers(0, 256, (h, w, 3), dtype=np.uint8), cv2.resize(photo, (w, h))])
        ref = np.stack([cv2.resize(c, (r, r), interpolation=cv2.INTER_LANCZOS4) for c in crops])
        out = resize_lanczos4(torch.from_numpy(crops), (r, r)).numpy()
        assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1
    aligner = FaceAligner(256)
    crops = torch.from_numpy(crops[:, :280, :210].copy())
    on_device = aligner.resize_to_model(crops, on_device=True)
    assert (on_device.int() - aligner.resize_to_model(crops).int()).abs().max() <= 1


def _reference_restore(frame: torch.Tensor, face: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Today's paste-back before issue 13, frame by frame: kornia masks over the footprint region (the golden-tested
    recipe)."""
    out = frame.permute(2, 0, 1).float()
    h, w = out.shape[-2:]
    inv = kornia.geometry.transform.invert_affine_transform(matrix[None])
    x0, y0, x1, y1 = footprint_roi(inv, tuple(face.shape[-2:]), (h, w))
    inv[:, 0, 2] -= x0
    inv[:, 1, 2] -= y0
    roi = (y1 - y0, x1 - x0)
    warped = kornia.geometry.transform.warp_affine(face[None], inv, roi, padding_mode="fill",
                                                   fill_value=torch.full((3,), 127.0))[0]
    warped = (warped / 2 + 0.5).clamp(0, 1) * 255
    hard, soft = soft_paste_mask(tuple(face.shape[-2:]), inv, roi, torch.float32)
    out[:, y0:y1, x0:x1] = soft[0] * (hard[0] * warped) + (1 - soft[0]) * out[:, y0:y1, x0:x1]
    return out.permute(1, 2, 0).to(torch.uint8)


def test_window_paste_back_from_prepared_masks_within_one_level_of_the_frame_by_frame_path():
    """A window of 1080p close-up frames (face about 1,000 px) and smaller faces, rotated; masks made first (as
    the producer does), reused for a repeated footprint, pasted in one call."""
    aligner = FaceAligner(256)
    w, h = aligner.crop_wh
    gen = torch.Generator().manual_seed(0)
    cases = [(1 / 3.6, 0.05, 500, 40), (1 / 3.6, 0.05, 500, 40), (1 / 3.3, -0.1, 700, 100), (1 / 1.3, 0.3, 30, 10),
             (1.0, 0.0, -150, 900)]  # the last crop lies partly outside the frame
    matrices = torch.tensor([[[s * math.cos(a), -s * math.sin(a), -tx * s], [s * math.sin(a), s * math.cos(a),
                                                                             -ty * s]] for s, a, tx, ty in cases],
                            dtype=torch.float32)
    frames = torch.randint(0, 256, (len(cases), 1080, 1920, 3), dtype=torch.uint8, generator=gen)
    faces = torch.rand(len(cases), 3, h, w, generator=gen) * 2 - 1
    masks = aligner.paste_masks(matrices, (1080, 1920))
    assert aligner._masks.hits == 1  # the repeated footprint
    out = aligner.restore_crop(frames, faces, matrices, masks)
    for i in range(len(cases)):
        ref = _reference_restore(frames[i], faces[i], matrices[i])
        diff = (out[i].int() - ref.int()).abs()
        assert diff.max() <= 1, (i, int(diff.max()))
        # the blend covers only where the soft mask is not zero, a smaller region than the reference's: kornia
        # normalises the face's sample positions by the region's size, so float32 rounding flips a few truncations
        assert int((diff > 0).sum()) < 0.002 * diff.numel(), (i, int((diff > 0).sum()))


def test_paste_mask_blurred_on_the_device_matches_opencv():
    """The GPU route of the paste mask (OpenCV footprint and erosions, the Gaussian blur as two 1-D convolutions on
    the device), forced here on the CPU: the soft masks within float32 rounding of cv2.GaussianBlur's, the pasted
    frames within one level, for a 1,000 px face, a small one and one partly outside the frame."""
    gen = torch.Generator().manual_seed(1)
    cases = [(1 / 3.6, 0.05, 500, 40), (1 / 1.3, 0.3, 30, 10), (1.0, 0.0, -150, 900)]
    matrices = torch.tensor([[[s * math.cos(a), -s * math.sin(a), -tx * s], [s * math.sin(a), s * math.cos(a),
                                                                             -ty * s]] for s, a, tx, ty in cases],
                            dtype=torch.float32)
    opencv, on_device = FaceAligner(256), FaceAligner(256, blur_on_device=True)
    assert opencv._masks.blur_device is None and on_device._masks.blur_device == torch.device("cpu")
    reference, blurred = opencv.paste_masks(matrices, (1080, 1920)), on_device.paste_masks(matrices, (1080, 1920))
    for ref, dev in zip(reference, blurred):
        assert ref.roi == dev.roi and ref.soft.shape == dev.soft.shape and ref.soft.numel() > 0
        torch.testing.assert_close(dev.hard, ref.hard, rtol=0, atol=0)
        torch.testing.assert_close(dev.soft, ref.soft, rtol=0, atol=2e-6)
    w, h = opencv.crop_wh
    frames = torch.randint(0, 256, (len(cases), 1080, 1920, 3), dtype=torch.uint8, generator=gen)
    faces = torch.rand(len(cases), 3, h, w, generator=gen) * 2 - 1
    diff = (opencv.restore_crop(frames, faces, matrices, reference).int()
            - on_device.restore_crop(frames, faces, matrices, blurred).int()).abs()
    assert int(diff.max()) <= 1 and int((diff > 0).sum()) < 100, (int(diff.max()), int((diff > 0).sum()))


def test_stage_threads_run_in_the_callers_inference_mode():
    """ComfyUI runs every node under `torch.inference_mode()`; tensors the caller made there are updated in place by
    the producer and finisher threads (e.g. the face tracker's matrices), which must run in the same mode."""
    with torch.inference_mode():
        state = torch.zeros(4)

        def items():
            for k in range(4):
                state[k] = k + 1  # producer: in place on the caller's inference tensor
                yield k

        def finish(k):
            state[k] *= 10  # finisher: the same

        run_stages(items(), lambda k: k, finish, overlap=True)
    assert state.tolist() == [10.0, 20.0, 30.0, 40.0]
