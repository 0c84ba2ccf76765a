"""Whisper audio embedding: AUDIO + frame rate + frame count -> one (50, 384) feature window per video frame."""
from __future__ import annotations

from comfy_api.latest import io

from ..latentsync.audio.windows import num_frames_for_duration

from . import runtime
from .types import AudioEmbeddings, AudioFeatures, WhisperModel, audio_to_waveform, to_fraction


def embed_audio(whisper, audio: dict, frame_rate, frame_count: int = 0) -> AudioFeatures:
    from ..latentsync.pipeline import audio_embeddings  # noqa: PLC0415 - heavy (Whisper): imported when run

    waveform, sample_rate = audio_to_waveform(audio)
    fps = to_fraction(frame_rate)
    frames = int(frame_count) if frame_count and frame_count > 0 else max(
        1, num_frames_for_duration(waveform.shape[-1], sample_rate, fps))
    progress = runtime.Progress(2)
    encoder = runtime.whisper_on_device(whisper)
    progress(1)
    embeds = audio_embeddings(encoder, waveform, sample_rate, fps, frames)
    progress(2)
    return AudioFeatures(embeds=embeds.float().cpu(), fps=fps)


class LatentSyncAudioEmbeddings(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncAudioEmbeddings",
            display_name="LatentSync Whisper Audio Embeddings",
            category="LatentSync",
            description="Turns speech into Whisper features and cuts one window of them per video frame.",
            inputs=[
                WhisperModel.Input("whisper", tooltip="From Load LatentSync Whisper."),
                io.Audio.Input("audio", tooltip="The speech to lip-sync to (any sample rate, mono or stereo)."),
                io.Float.Input("frame_rate", default=25.0, min=0.01, max=1000.0, step=0.001,
                               tooltip="Frame rate of the video (e.g. the fps output of Get Video Components)."),
                io.Int.Input("frame_count", default=0, min=0, max=1_000_000,
                             tooltip="Number of video frames to make windows for; 0 = as many as the audio "
                                     "covers at this frame rate."),
            ],
            outputs=[AudioEmbeddings.Output(display_name="audio_embeds",
                                            tooltip="Per-frame Whisper features (frames, 50, 384).")],
        )

    @classmethod
    def execute(cls, whisper, audio, frame_rate, frame_count) -> io.NodeOutput:
        return io.NodeOutput(embed_audio(whisper, audio, frame_rate, frame_count))


NODES = [LatentSyncAudioEmbeddings]
