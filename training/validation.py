"""Validation during U-Net training: our own pipeline lip-syncs a clip with the current weights; the result is
saved (`<output_dir>/validation/step-N.mp4`), a few frames go to TensorBoard, and the SyncNet-v2 scorer
(`latentsync.eval`) measures its sync confidence (higher = better; > 3 is the data-filter bar; the released models
score about 7-9 on their demos) and AV offset in frames (0 = in sync)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from latentsync import hub
from latentsync.audio.whisper_encoder import WhisperAudioEncoder
from latentsync.face.detector import create_face_detector
from latentsync.face.mask import load_mask
from latentsync.pipeline import LipSyncPipeline
from latentsync.vae import VAECodec
from latentsync.video_io import read_audio, read_video, write_video

LOG = logging.getLogger("latentsync.training")
REPO = Path(__file__).resolve().parents[1]
DEMO_VIDEO = REPO / "assets" / "demo" / "demo_clip_15fps.mp4"
DEMO_AUDIO = REPO / "assets" / "demo" / "demo_speech_arctic_a0007.wav"


def _sync_scorer(cfg: DictConfig, root: Path, device):
    """(score function, SyncNet-v2, detector) from `latentsync.eval`, or None when the scorer cannot be built
    (the reason is logged once; validation then reports the video and frames only)."""
    try:
        from latentsync import eval as sync_eval
    except ImportError as exc:
        LOG.warning("validation: SyncNet-v2 scoring is not available (%s)", exc)
        return None
    v = cfg.validation
    try:
        syncnet = sync_eval.load_syncnet_v2(v.get("syncnet_v2") or hub.locate_syncnet_v2(
            root, download=bool(cfg.models.download)), device=device)
    except (FileNotFoundError, hub.ModelNotFoundError, ValueError) as exc:
        LOG.warning("validation: no SyncNet-v2 weights, sync confidence is not measured: %s", exc)
        return None
    return sync_eval.score_sync, syncnet


def log_frames(accelerator, frames, step: int) -> None:
    """A few validation frames (N, H, W, 3 uint8) to the run's tracker (`run.log_with`)."""
    names = {t.name for t in accelerator.trackers}
    if "tensorboard" in names:
        accelerator.get_tracker("tensorboard", unwrap=True).add_images("validation/frames", frames, step,
                                                                       dataformats="NHWC")
    if "wandb" in names:
        import wandb

        accelerator.get_tracker("wandb", unwrap=True).log(
            {"validation/frames": [wandb.Image(f) for f in frames]}, step=step)


class UNetValidator:
    def __init__(self, cfg: DictConfig, output_dir: Path, paths: dict, vae, accelerator):
        v = cfg.validation
        self.cfg, self.accelerator = cfg, accelerator
        self.device = accelerator.device
        self.folder = output_dir / "validation"
        self.folder.mkdir(parents=True, exist_ok=True)
        clip = read_video(Path(v.get("video") or DEMO_VIDEO))
        audio, rate = read_audio(Path(v.get("audio") or DEMO_AUDIO))
        if v.get("max_seconds"):
            audio = audio[:, : int(float(v.max_seconds) * rate)]
        self.frames, self.fps, self.audio, self.rate = clip.frames, clip.fps, audio, rate
        root = paths.get("models_root") or output_dir
        insightface = (hub.locate_insightface(root, download=bool(cfg.models.download))
                       if v.face_backend == "insightface" else None)
        detector = create_face_detector(v.face_backend, models_dir=insightface, device=str(self.device))
        self.detector = detector
        self.encoder = WhisperAudioEncoder.from_file(paths["whisper"], device=self.device)
        self.codec = VAECodec(vae)
        self.mask = load_mask(paths["mask"], int(cfg.data.resolution))
        self.scorer = _sync_scorer(cfg, Path(root), self.device)

    @torch.no_grad()
    def run(self, unet, step: int) -> dict[str, float]:
        v = self.cfg.validation
        pipe = LipSyncPipeline(unet, self.codec, self.encoder, self.detector, self.mask,
                               int(self.cfg.data.resolution), device=self.device)
        was_training = unet.training
        unet.eval()
        try:
            result = pipe(self.frames, self.fps, self.audio, self.rate, steps=int(v.steps),
                          guidance=float(v.guidance), seed=int(v.get("seed", 1247)))
        finally:
            unet.train(was_training)
        out = self.folder / f"step-{step:07d}.mp4"
        write_video(out, result.frames, result.fps, audio=result.waveform, sample_rate=result.sample_rate,
                    overwrite=True)
        n = result.frames.shape[0]
        picks = torch.linspace(0, n - 1, min(int(v.num_frames_logged), n)).round().long()
        log_frames(self.accelerator, result.frames[picks].numpy(), step)
        values = {"val/faces_found": float(result.has_face.float().mean())}
        if self.scorer is not None:
            score_sync, syncnet = self.scorer
            score = score_sync(result.frames, result.fps, result.waveform, result.sample_rate, syncnet=syncnet,
                               detector=self.detector, device=str(self.device))
            values.update({"val/sync_confidence": float(score.confidence),
                           "val/sync_offset_frames": float(score.offset_frames),
                           "val/sync_distance": float(score.distance)})
        LOG.info("validation at step %d: %s (%s)", step, values, out)
        return values
