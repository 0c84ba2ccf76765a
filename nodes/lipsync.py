"""One-node paths: VIDEO + AUDIO -> VIDEO, and IMAGE + AUDIO + frame rate -> IMAGE + AUDIO.

Both run the library's `LipSyncPipeline` (the same stage functions as the modular nodes) in memory: the output is
as long as the audio (frames ping-pong looped when the audio is longer, as the official pipeline), same size and
frame rate as the input; frames without a face are passed through unchanged.
"""
from __future__ import annotations

from comfy_api.latest import InputImpl, Types, io

from ..latentsync.face.selection import FaceSelector
from ..latentsync.pipeline import WINDOW, LipSyncPipeline

from . import runtime
from .score import add_output_score, score_switch
from .types import (FaceAnalyzer, LatentSyncModel, WhisperModel, audio_to_waveform, image_to_uint8, to_fraction,
                    uint8_to_image, waveform_to_audio)


def run_lipsync(model, vae, whisper, face_analyzer, frames_image, fps, audio: dict, seed: int, steps: int,
                guidance: float, deepcache: bool, deepcache_interval: int = 3, face_selection: str = "largest",
                face_index: int = 0):
    """-> (IMAGE frames, AUDIO, fps Fraction, ui payload)."""
    frames = image_to_uint8(frames_image)
    fps = to_fraction(fps)
    waveform, sample_rate = audio_to_waveform(audio)
    progress = runtime.Progress(1)
    encoder = runtime.whisper_on_device(whisper)
    pipe = LipSyncPipeline(
        unet=runtime.ManagedUNet(model.patcher, runtime.unet_memory_estimate(model.resolution, WINDOW, model.dtype)),
        vae_codec=runtime.ComfyVAECodec(vae),
        audio_encoder=encoder,
        face_detector=face_analyzer.detector,
        mask=model.mask,
        resolution=model.resolution,
        device=runtime.torch_device(),
        selector=FaceSelector(mode=face_selection, index=int(face_index)),
    )
    result = pipe(frames, fps, waveform, sample_rate, steps=int(steps), guidance=float(guidance),
                  deepcache=bool(deepcache), deepcache_interval=int(deepcache_interval), seed=int(seed),
                  progress=progress)
    ui, _warning = runtime.face_report(result.has_face)
    return uint8_to_image(result.frames), waveform_to_audio(result.waveform, result.sample_rate), result.fps, ui


def _sampling_inputs() -> list:
    return [
        io.Int.Input("seed", default=1247, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                     tooltip="Seed of the starting noise."),
        io.Int.Input("steps", default=20, min=1, max=1000, tooltip="DDIM steps (official: 20)."),
        io.Float.Input("guidance", default=1.5, min=1.0, max=10.0, step=0.1,
                       tooltip="Classifier-free guidance on the audio (official: 1.5; 1.0 = off, faster)."),
        io.Boolean.Input("deepcache", default=True, tooltip="DeepCache: faster sampling, nearly identical result."),
        io.Int.Input("deepcache_interval", default=3, min=2, max=10,
                     tooltip="With DeepCache: a full U-Net pass every this many steps."),
    ]


def _model_inputs() -> list:
    return [
        LatentSyncModel.Input("model", tooltip="From Load LatentSync Model."),
        io.Vae.Input("vae", tooltip="The SD 1.x VAE from ComfyUI's Load VAE (vae-ft-mse-840000-ema-pruned)."),
        WhisperModel.Input("whisper", tooltip="From Load LatentSync Whisper."),
        FaceAnalyzer.Input("face_analyzer", tooltip="From Load LatentSync Face Analyzer."),
    ]


class LatentSyncLipSyncVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncLipSyncVideo",
            display_name="LatentSync Lip Sync (Video)",
            category="LatentSync",
            description="Re-animates the mouth of the face in a video to match the audio. The result is as long as "
                        "the audio (the video is looped back and forth if shorter) and keeps the video's size and "
                        "frame rate.",
            inputs=[
                io.Video.Input("video", tooltip="The video with a face (e.g. from Load Video)."),
                io.Audio.Input("audio", optional=True,
                               tooltip="The speech to lip-sync to. Not connected: the video's own audio track."),
                *_model_inputs(),
                *_sampling_inputs(),
                score_switch(),
            ],
            outputs=[io.Video.Output(display_name="video", tooltip="The lip-synced video with the audio.")],
        )

    @classmethod
    def execute(cls, video, model, vae, whisper, face_analyzer, seed, steps, guidance, deepcache,
                deepcache_interval, audio=None, score=False) -> io.NodeOutput:
        components = video.get_components()
        if audio is None:
            audio = components.audio
            if audio is None:
                raise ValueError("the video has no audio track: connect an AUDIO input (e.g. Load Audio)")
        images, out_audio, fps, ui = run_lipsync(model, vae, whisper, face_analyzer, components.images,
                                                 components.frame_rate, audio, seed, steps, guidance, deepcache,
                                                 deepcache_interval)
        ui = add_output_score(ui, score, images, fps, out_audio, face_analyzer)
        result = InputImpl.VideoFromComponents(Types.VideoComponents(images=images, audio=out_audio, frame_rate=fps))
        return io.NodeOutput(result, ui=ui)


class LatentSyncLipSyncImages(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncLipSyncImages",
            display_name="LatentSync Lip Sync (Images)",
            category="LatentSync",
            description="Lip-syncs an IMAGE batch (video frames) to the audio. Returns the frames (as long as the "
                        "audio) and the audio cut to them, ready for Create Video.",
            inputs=[
                io.Image.Input("images", tooltip="Video frames with a face, in playback order."),
                io.Audio.Input("audio", tooltip="The speech to lip-sync to."),
                io.Float.Input("frame_rate", default=25.0, min=0.01, max=1000.0, step=0.001,
                               tooltip="Frame rate of the frames (e.g. the fps output of Get Video Components)."),
                *_model_inputs(),
                *_sampling_inputs(),
                score_switch(),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="Lip-synced frames."),
                io.Audio.Output(display_name="audio", tooltip="The audio, cut to the frames' duration."),
            ],
        )

    @classmethod
    def execute(cls, images, audio, frame_rate, model, vae, whisper, face_analyzer, seed, steps, guidance,
                deepcache, deepcache_interval, score=False) -> io.NodeOutput:
        out_images, out_audio, fps, ui = run_lipsync(model, vae, whisper, face_analyzer, images, frame_rate, audio,
                                                     seed, steps, guidance, deepcache, deepcache_interval)
        ui = add_output_score(ui, score, out_images, fps, out_audio, face_analyzer)
        return io.NodeOutput(out_images, out_audio, ui=ui)


NODES = [LatentSyncLipSyncVideo, LatentSyncLipSyncImages]
