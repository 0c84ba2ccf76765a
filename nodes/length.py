"""Match the video's length to the audio as the official pipeline does: the frames are played forward, backward,
forward... until the audio is covered (or cut when the audio is shorter); the audio is cut to the result."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..latentsync.audio.windows import num_frames_for_duration
from ..latentsync.timeline import source_order

from .types import audio_to_waveform, to_fraction, trim_audio


def loop_to_audio(images, audio: dict, frame_rate):
    fps = to_fraction(frame_rate)
    waveform, sample_rate = audio_to_waveform(audio)
    if images.shape[0] == 0:
        raise ValueError("the IMAGE batch is empty (no frames)")
    count = max(1, num_frames_for_duration(waveform.shape[-1], sample_rate, fps))
    order = torch.from_numpy(source_order("pingpong", images.shape[0], count))
    return images[order.to(images.device)], trim_audio(audio, count, fps), count


class LatentSyncLoopToAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncLoopToAudio",
            display_name="LatentSync Match Video to Audio",
            category="LatentSync",
            description="Makes the frames as long as the audio (ping-pong loop, as the official pipeline) and cuts "
                        "the audio to the resulting video length.",
            inputs=[
                io.Image.Input("images", tooltip="Video frames."),
                io.Audio.Input("audio", tooltip="The speech the video must cover."),
                io.Float.Input("frame_rate", default=25.0, min=0.01, max=1000.0, step=0.001,
                               tooltip="Frame rate of the video."),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="Frames looped (or cut) to the audio length."),
                io.Audio.Output(display_name="audio", tooltip="The audio cut to the video length."),
                io.Int.Output(display_name="frame_count", tooltip="Number of output frames."),
            ],
        )

    @classmethod
    def execute(cls, images, audio, frame_rate) -> io.NodeOutput:
        return io.NodeOutput(*loop_to_audio(images, audio, frame_rate))


NODES = [LatentSyncLoopToAudio]
