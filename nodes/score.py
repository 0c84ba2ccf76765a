"""Lip-sync scoring with SyncNet-v2: the weights loader, the `LatentSync Sync Score` node, and the helper behind the
one-node lip-sync paths' optional ``score`` switch. The work is `latentsync.eval.SyncScorer`; this file adapts
ComfyUI's VIDEO / IMAGE / AUDIO, devices, progress and Cancel to it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from comfy_api.latest import io

from ..latentsync.face.selection import FaceSelector

from . import runtime
from .faces import face_choice_inputs
from .runtime import LOG, MODEL_CACHE
from .types import FaceAnalyzer, audio_to_waveform, open_video, to_fraction, uint8_to_image

if TYPE_CHECKING:
    from ..latentsync.eval.score import SyncScore

SyncNetModel = io.Custom("LATENTSYNC_SYNCNET")
"""SyncNet-v2, the evaluation network that scores lip sync (LSE-C / LSE-D)."""

OFFICIAL_SYNCNET = "auxiliary/syncnet_v2.model"  # under models/latentsync (hub.SYNCNET_V2_FILE)
SYNCNET_EXTENSIONS = (".model", ".pt", ".pth")
CHUNK = 32  # frames decoded or converted to uint8, and handed to the scorer, at a time
UI_KEY = "latentsync_sync"


class SyncNetHolder(torch.nn.Module):
    """What the ModelPatcher manages: the SyncNet-v2 module."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.syncnet = net


@dataclass(eq=False)
class LoadedSyncNet:
    """LATENTSYNC_SYNCNET: SyncNet-v2 in a ModelPatcher (moved to the GPU by ComfyUI when scoring)."""

    patcher: Any
    path: str
    is_tiny: bool = False

    def on_device(self) -> tuple[torch.nn.Module, torch.device]:
        device = runtime.load_to_device(self.patcher)
        return self.patcher.model.syncnet, torch.device(device)


def syncnet_choices() -> list[str]:
    """The official file (downloadable) and every SyncNet-v2 file found under models/latentsync/auxiliary/."""
    found = [n for n in runtime.list_files(runtime.LATENTSYNC_FOLDER, SYNCNET_EXTENSIONS)
             if n.startswith("auxiliary/") and "syncnet" in n.lower() and "stable" not in n.lower()]
    return [OFFICIAL_SYNCNET] + sorted(set(found) - {OFFICIAL_SYNCNET})


def load_syncnet(name: str = OFFICIAL_SYNCNET, download_missing: bool = True) -> LoadedSyncNet:
    from ..latentsync import hub  # noqa: PLC0415
    from ..latentsync.eval.syncnet_v2 import load_syncnet_v2  # noqa: PLC0415
    from .loaders import _is_tiny, _models_root_of, locate_latentsync_file  # noqa: PLC0415

    name = runtime.check_relative(name)
    path = locate_latentsync_file(name, hub.SYNCNET_V2_FILE if name == OFFICIAL_SYNCNET else None, download_missing)
    key = ("SyncNet-v2", runtime.ModelCache.stamp(path))

    def load() -> LoadedSyncNet:
        LOG.info("LatentSync: loading SyncNet-v2 %s", path)
        net = load_syncnet_v2(path, device=runtime.offload_device())
        tiny = _is_tiny(_models_root_of(path))
        if tiny:
            LOG.warning("LatentSync: %s comes from a TINY RANDOM model set: its sync figures mean nothing", path)
        return LoadedSyncNet(patcher=runtime.make_patcher(SyncNetHolder(net)), path=path, is_tiny=tiny)

    return MODEL_CACHE.get_or_load(key, load)


def score_source(syncnet: LoadedSyncNet, face_analyzer, source, audio: dict, face_selection: str = "largest",
                 face_index: int = 0, fps=None, num_frames: int | None = None) -> SyncScore:
    """The first `num_frames` (default: all) frames of a library frame source (a video file decoded window by window,
    or frames in memory), at `fps` (default: the source's own rate), + AUDIO -> `SyncScore`, with the node's
    progress bar and Cancel. Frames are converted and scored CHUNK at a time: never all of them at once."""
    from ..latentsync.eval.score import SyncScorer  # noqa: PLC0415 - heavy: imported when run

    n = len(source) if num_frames is None else min(int(num_frames), len(source))
    waveform, sample_rate = audio_to_waveform(audio)
    net, device = syncnet.on_device()
    scorer = SyncScorer(net, face_analyzer.detector, to_fraction(fps or source.timing.fps), waveform, sample_rate,
                        selector=FaceSelector(mode=face_selection, index=int(face_index)), device=device,
                        progress=runtime.Progress(n), total_frames=n)
    scorer.add_chunks(source.read(i, min(i + CHUNK, n)) for i in range(0, n, CHUNK))
    return scorer.result()


def score_images(syncnet: LoadedSyncNet, face_analyzer, images: torch.Tensor, fps, audio: dict,
                 face_selection: str = "largest", face_index: int = 0) -> SyncScore:
    """IMAGE frames at ``fps`` + AUDIO -> `SyncScore`."""
    from ..latentsync.pipeline import TensorFrameSource  # noqa: PLC0415

    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
        raise ValueError("expected a non-empty IMAGE batch of video frames")
    return score_source(syncnet, face_analyzer, TensorFrameSource(images, fps=to_fraction(fps)), audio,
                        face_selection, face_index)


def score_video(syncnet: LoadedSyncNet, face_analyzer, video, audio: dict | None, face_selection: str = "largest",
                face_index: int = 0) -> SyncScore:
    """A VIDEO + AUDIO (None: the video's own track) -> `SyncScore`. A VIDEO backed by a file (Load Video's, the
    lip-sync node's) is decoded from it window by window, as the lip-sync node reads it; any other VIDEO from its
    frames in memory."""
    from ..latentsync.video_io import VideoFileSource  # noqa: PLC0415

    source, own_audio, _path = open_video(video, read_own_audio=audio is None)
    try:
        audio = audio if audio is not None else own_audio
        if audio is None:
            raise ValueError("the video has no audio track: connect an AUDIO input with the speech")
        return score_source(syncnet, face_analyzer, source, audio, face_selection, face_index)
    finally:
        if isinstance(source, VideoFileSource):
            source.close()


def sync_report(score: SyncScore | None, label: str = "", error: str = "", tiny: bool = False) -> dict:
    """One entry of the ``latentsync_sync`` ui payload the web extension shows on the node."""
    if score is None:
        return {"label": label, "error": error, "tiny": tiny}
    return {"label": label, "error": "", "tiny": tiny, "confidence": round(score.confidence, 4),
            "distance": round(score.distance, 4), "offset_frames": score.offset_frames,
            "offset_seconds": score.offset_seconds, "frames_scored": score.num_frames_scored,
            "frames": score.num_frames}


def score_switch():
    """The optional ``score`` input of the one-node lip-sync paths."""
    return io.Boolean.Input("score", default=False, optional=True,
                            tooltip="Also score the result's lip sync with SyncNet-v2 (confidence, distance, offset "
                                    "shown on the node; the official weights are downloaded on first use).")


def score_video_file(syncnet: LoadedSyncNet, face_analyzer, path: str, num_frames: int, fps, audio: dict,
                     face_selection: str = "largest", face_index: int = 0) -> SyncScore:
    """A video file's first ``num_frames`` frames (decoded window by window, never held whole) at ``fps`` + AUDIO ->
    `SyncScore`."""
    from ..latentsync.video_io import VideoFileSource  # noqa: PLC0415

    with VideoFileSource(path) as source:
        return score_source(syncnet, face_analyzer, source, audio, face_selection, face_index, fps, num_frames)


def add_output_score(ui: dict, enabled: bool, frames: torch.Tensor | str, fps, audio: dict, face_analyzer,
                     num_frames: int | None = None) -> dict:
    """The ``score`` switch of the one-node lip-sync paths: score their own output (an IMAGE batch, or the path of
    the video file of ``num_frames`` frames the VIDEO path wrote) with the official SyncNet-v2 (downloaded on first
    use) and add the figures to the node's ``ui``. A failure to score is reported on the node and in the log; it
    never fails the lip-sync itself."""
    if not enabled:
        return ui
    from ..latentsync.eval.score import SyncScoreError  # noqa: PLC0415
    from ..latentsync.eval.syncnet_v2 import SyncNetLoadError  # noqa: PLC0415
    from ..latentsync.hub import ModelNotFoundError  # noqa: PLC0415

    try:
        syncnet = load_syncnet(OFFICIAL_SYNCNET, download_missing=True)
        if isinstance(frames, str):
            score = score_video_file(syncnet, face_analyzer, frames, num_frames, fps, audio, face_analyzer.selection)
        else:
            score = score_images(syncnet, face_analyzer, frames, fps, audio, face_analyzer.selection)
        report = sync_report(score, "output", tiny=syncnet.is_tiny)
        LOG.info("LatentSync: sync score of the output: confidence %.3f, distance %.3f, offset %+d frames",
                 score.confidence, score.distance, score.offset_frames)
    except (SyncScoreError, ModelNotFoundError, SyncNetLoadError) as exc:  # no face, too short, no weights
        LOG.warning("LatentSync: the output could not be scored: %s", exc)
        report = sync_report(None, "output", error=str(exc))
    return {**ui, UI_KEY: [report]}


class LatentSyncSyncNetLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        choices = syncnet_choices()
        return io.Schema(
            node_id="LatentSyncSyncNetLoader",
            display_name="Load SyncNet-v2 (sync scoring)",
            category="LatentSync",
            description="Loads SyncNet-v2, the network the official LatentSync evaluation uses to score lip sync "
                        "(models/latentsync/auxiliary/syncnet_v2.model, downloaded when missing).",
            inputs=[
                io.Combo.Input("syncnet", options=choices, default=choices[0],
                               tooltip="SyncNet-v2 weights under models/latentsync/auxiliary/ (the official "
                                       "syncnet_v2.model is downloaded from ByteDance/LatentSync-1.5 when missing)."),
                io.Boolean.Input("download_missing", default=True,
                                 tooltip="Download the official syncnet_v2.model when it is not in the models folder."),
            ],
            outputs=[SyncNetModel.Output(display_name="syncnet")],
        )

    @classmethod
    def execute(cls, syncnet, download_missing) -> io.NodeOutput:
        return io.NodeOutput(load_syncnet(syncnet, download_missing))


class LatentSyncSyncScore(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncSyncScore",
            display_name="LatentSync Sync Score",
            category="LatentSync",
            is_output_node=True,  # shows its figures on the node even when no output is connected
            description="Scores how well the lips match the speech with SyncNet-v2, as the official evaluation: "
                        "confidence (LSE-C, higher is better), distance (LSE-D, lower is better) and the audio-video "
                        "offset in frames at 25 fps (> 0: the audio is ahead). Connect a VIDEO, or IMAGE frames + "
                        "AUDIO + frame rate.",
            inputs=[
                SyncNetModel.Input("syncnet", tooltip="From Load SyncNet-v2."),
                FaceAnalyzer.Input("face_analyzer", tooltip="From Load LatentSync Face Analyzer: finds the face "
                                                            "whose mouth is scored."),
                io.Video.Input("video", optional=True,
                               tooltip="A video with its audio track (or connect AUDIO to score against other speech)."),
                io.Image.Input("images", optional=True, tooltip="Instead of a VIDEO: the frames, in playback order."),
                io.Audio.Input("audio", optional=True,
                               tooltip="The speech. Required with IMAGE; with a VIDEO it replaces the video's track."),
                io.Float.Input("frame_rate", default=25.0, min=0.01, max=1000.0, step=0.001,
                               tooltip="Frame rate of the IMAGE frames (ignored for a VIDEO, which has its own)."),
                *face_choice_inputs("scored"),
            ],
            outputs=[
                io.Float.Output(display_name="confidence", tooltip="LSE-C: median minus minimum of the mean "
                                                                   "distance over offsets; higher = better synced."),
                io.Float.Output(display_name="distance", tooltip="LSE-D: minimum mean distance; lower = better."),
                io.Int.Output(display_name="offset", tooltip="Audio-video offset in frames at 25 fps (> 0: audio "
                                                             "ahead of the video)."),
                io.Image.Output(display_name="plot", tooltip="Distance vs offset, and the per-frame confidence."),
            ],
        )

    @classmethod
    def execute(cls, syncnet, face_analyzer, frame_rate, face_selection, face_index, video=None, images=None,
                audio=None) -> io.NodeOutput:
        from ..latentsync.eval.score import SyncScoreError  # noqa: PLC0415

        if video is None and images is None:
            raise ValueError("connect a VIDEO, or IMAGE frames + AUDIO")
        if video is None and audio is None:
            raise ValueError("connect the AUDIO (the speech) to score IMAGE frames")
        try:
            if video is not None:
                score = score_video(syncnet, face_analyzer, video, audio, face_selection, face_index)
            else:
                score = score_images(syncnet, face_analyzer, images, frame_rate, audio, face_selection, face_index)
        except SyncScoreError as exc:
            raise ValueError(f"cannot score lip sync: {exc}") from exc
        from ..latentsync.eval.plot import plot_sync  # noqa: PLC0415

        picture = torch.from_numpy(plot_sync(score)).unsqueeze(0)
        ui = {UI_KEY: [sync_report(score, tiny=syncnet.is_tiny)]}
        return io.NodeOutput(score.confidence, score.distance, score.offset_frames, uint8_to_image(picture), ui=ui)


NODES = [LatentSyncSyncNetLoader, LatentSyncSyncScore]
