"""One-node paths: VIDEO + AUDIO -> VIDEO, and IMAGE + AUDIO + frame rate -> IMAGE + AUDIO.

Both stream the library's `LipSyncPipeline.run` (the same stage functions as the modular nodes) window by window.
The VIDEO node reads its input lazily from the file behind ComfyUI's VIDEO (Load Video gives one; other VIDEO values
fall back to their frames in memory) and writes the result progressively, in one H.264 + AAC encode, to ComfyUI's
temp folder (a `.part` file renamed when complete; Cancel or an error leaves nothing), returning a VIDEO backed by
that file: Save Video then copies its streams without encoding again. The IMAGE node converts one window at a time
and fills a single output tensor. Length modes, face-gap bridging and strict faces are the library's.
"""
from __future__ import annotations

import os
import uuid

import folder_paths
import torch
from comfy_api.latest import Input, InputImpl, io

from ..latentsync.face.gaps import DEFAULT_MAX_GAP
from ..latentsync.options import LipSyncOptions
from ..latentsync.pipeline import WINDOW, LipSyncPipeline, TensorFrameSource, TensorSink, output_waveform
from ..latentsync.precision import cpu_time_warning
from ..latentsync.timeline import LENGTH_MODES
from ..latentsync.video_io import MediaError, VideoFileSource, VideoWriter, has_audio, read_audio

from . import runtime
from .score import add_output_score, score_switch
from .types import FaceAnalyzer, LatentSyncModel, WhisperModel, audio_to_waveform, to_fraction, waveform_to_audio

TEMP_SUBFOLDER = "latentsync"


def node_options(seed, steps, guidance, deepcache, deepcache_interval, length_mode="pingpong",
                 max_face_gap=DEFAULT_MAX_GAP, strict_faces=False, **more) -> LipSyncOptions:
    """The one-node paths' inputs as the library's lip-sync options (validated, with the command line's texts)."""
    return LipSyncOptions(seed=int(seed), steps=int(steps), guidance=float(guidance), deepcache=bool(deepcache),
                          deepcache_interval=int(deepcache_interval), length_mode=length_mode,
                          max_gap=int(max_face_gap), strict_faces=bool(strict_faces), **more).validate()


def make_pipeline(model, vae, whisper, face_analyzer, options: LipSyncOptions) -> LipSyncPipeline:
    return LipSyncPipeline(
        unet=runtime.ManagedUNet(model.patcher, runtime.unet_memory_estimate(model.resolution, WINDOW, model.dtype)),
        vae_codec=runtime.ComfyVAECodec(vae),
        audio_encoder=runtime.whisper_on_device(whisper),
        face_detector=face_analyzer.detector,
        mask=model.mask,
        resolution=model.resolution,
        device=runtime.torch_device(),
        selector=options.face_selector(),
    )


def open_video(video) -> tuple[object, dict | None, str | None]:
    """(frame source, the video's own AUDIO or None, the file behind it or None). A VIDEO that has its own stream
    source (Load Video's file) is read lazily from it; any other VIDEO through its components (already in memory)."""
    own_source = type(video).get_stream_source is not Input.Video.get_stream_source
    if own_source:
        stream = video.get_stream_source()
        name = stream if isinstance(stream, str) else "the input video"
        source = VideoFileSource(stream, name=name)
        audio = None
        if has_audio(stream):
            waveform, rate = read_audio(stream, name=name)
            audio = waveform_to_audio(waveform, rate)
        return source, audio, stream if isinstance(stream, str) else None
    components = video.get_components()
    return TensorFrameSource(components.images, fps=to_fraction(components.frame_rate)), components.audio, None


def prepare(pipe: LipSyncPipeline, model, source, audio: dict, options: LipSyncOptions):
    """The output plan for this audio and length mode, and the notes shown on the node (on a CPU: how long a
    window and the whole run will take, said before it starts). Returns (plan, waveform, sample_rate, notes)."""
    waveform, sample_rate = audio_to_waveform(audio)
    plan = pipe.plan(source.timing, waveform, sample_rate, options.length_mode)
    notes = []
    if runtime.torch_device().type == "cpu":
        notes.append(cpu_time_warning(model.resolution, model.dtype, options.steps,
                                      options.deepcache_interval if options.deepcache else 1, options.guidance,
                                      -(-len(plan) // WINDOW)))
        runtime.LOG.warning("LatentSync: %s", notes[-1])
    return plan, waveform, sample_rate, notes


def stream(pipe: LipSyncPipeline, source, plan, waveform, sample_rate: int, sink, notes: list[str],
           options: LipSyncOptions) -> dict:
    """Run the pipeline window by window into `sink` (progress bar + Cancel per step); returns the node's ui."""
    report = pipe.run(source, plan, waveform, sample_rate, sink, progress=runtime.Progress(1),
                      **options.pipeline_kwargs())
    return runtime.coverage_report(report, notes)[0]


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


def _length_and_face_inputs() -> list:
    """Optional (appended last), so workflows saved before they existed still load and validate."""
    return [
        io.Combo.Input("length_mode", options=list(LENGTH_MODES), default="pingpong", optional=True,
                       tooltip="When audio and video differ in length. pingpong: play the video back and forth "
                               "to the audio's length (official); loop: from the start again; cut_off: the shorter "
                               "of the two; silence: the whole video, frames after the audio get silence; freeze: "
                               "hold the last frame. The audio is always yours, at its own rate and channels."),
        io.Int.Input("max_face_gap", default=DEFAULT_MAX_GAP, min=0, max=250, optional=True,
                     tooltip="Frames without a detected face between two with one: gaps up to this long are "
                             "bridged by interpolating the alignment (no flicker); longer ones pass through "
                             "unchanged. 0 = off."),
        io.Boolean.Input("strict_faces", default=False, optional=True,
                         tooltip="Fail on the first frame without a face instead of passing it through "
                                 "(a video with no face at all then fails instead of coming back unchanged)."),
    ]


def validate_length_mode(length_mode) -> bool | str:
    """Checked when the prompt is queued: ComfyUI 0.3.75 does not check a V3 combo's value against its options, so
    an unknown length mode is rejected here (with the choices) instead of failing after the video is opened."""
    if length_mode is None or length_mode in LENGTH_MODES:
        return True
    return f"unknown length mode {length_mode!r}; choose one of {', '.join(LENGTH_MODES)}"


class LatentSyncLipSyncVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncLipSyncVideo",
            display_name="LatentSync Lip Sync (Video)",
            category="LatentSync",
            description="Re-animates the mouth of the face in a video to match the audio, streaming it window by "
                        "window (memory does not grow with the video's length). By default the result is as long "
                        "as the audio (the video is played back and forth if shorter) and keeps the video's size "
                        "and frame rate.",
            inputs=[
                io.Video.Input("video", tooltip="The video with a face (e.g. from Load Video)."),
                io.Audio.Input("audio", optional=True,
                               tooltip="The speech to lip-sync to. Not connected: the video's own audio track."),
                *_model_inputs(),
                *_sampling_inputs(),
                *_length_and_face_inputs(),
                score_switch(),
            ],
            outputs=[io.Video.Output(display_name="video", tooltip="The lip-synced video with the audio.")],
        )

    @classmethod
    def validate_inputs(cls, length_mode="pingpong") -> bool | str:
        return validate_length_mode(length_mode)

    @classmethod
    def execute(cls, video, model, vae, whisper, face_analyzer, seed, steps, guidance, deepcache,
                deepcache_interval, audio=None, length_mode="pingpong", max_face_gap=DEFAULT_MAX_GAP,
                strict_faces=False, score=False) -> io.NodeOutput:
        options = node_options(seed, steps, guidance, deepcache, deepcache_interval, length_mode, max_face_gap,
                               strict_faces)
        source, own_audio, path = open_video(video)
        try:
            if audio is None:
                audio = own_audio
                if audio is None:
                    raise MediaError(f"{path or 'the video'} has no audio track: connect an AUDIO input "
                                     "(e.g. Load Audio)")
            pipe = make_pipeline(model, vae, whisper, face_analyzer, options)
            plan, waveform, sample_rate, notes = prepare(pipe, model, source, audio, options)
            folder = os.path.join(folder_paths.get_temp_directory(), TEMP_SUBFOLDER)
            os.makedirs(folder, exist_ok=True)
            out = os.path.join(folder, f"LatentSync_{uuid.uuid4().hex[:16]}.mp4")
            with VideoWriter(out, plan.fps, source.frame_size, audio=waveform, sample_rate=sample_rate,
                             audio_samples=plan.audio_samples(sample_rate), base=None if plan.constant else plan.base,
                             inputs=[path] if path else (),
                             log=lambda message: runtime.LOG.warning("LatentSync: %s", message)) as writer:
                ui = stream(pipe, source, plan, waveform, sample_rate, writer, notes, options)
                writer.close()
        finally:
            if isinstance(source, VideoFileSource):
                source.close()
        if score:  # what the user gets: the written file's frames and its (AAC) audio track
            ui = add_output_score(ui, score, out, plan.fps, waveform_to_audio(*read_audio(out)), face_analyzer,
                                  num_frames=len(plan))
        return io.NodeOutput(InputImpl.VideoFromFile(out), ui=ui)


class LatentSyncLipSyncImages(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncLipSyncImages",
            display_name="LatentSync Lip Sync (Images)",
            category="LatentSync",
            description="Lip-syncs an IMAGE batch (video frames) to the audio. Returns the frames (by default as "
                        "long as the audio) and the audio cut (or, in silence mode, padded) to them, ready for "
                        "Create Video.",
            inputs=[
                io.Image.Input("images", tooltip="Video frames with a face, in playback order."),
                io.Audio.Input("audio", tooltip="The speech to lip-sync to."),
                io.Float.Input("frame_rate", default=25.0, min=0.01, max=1000.0, step=0.001,
                               tooltip="Frame rate of the frames (e.g. the fps output of Get Video Components)."),
                *_model_inputs(),
                *_sampling_inputs(),
                *_length_and_face_inputs(),
                score_switch(),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="Lip-synced frames."),
                io.Audio.Output(display_name="audio", tooltip="The audio, cut (or padded) to the frames' duration."),
            ],
        )

    @classmethod
    def validate_inputs(cls, length_mode="pingpong") -> bool | str:
        return validate_length_mode(length_mode)

    @classmethod
    def execute(cls, images, audio, frame_rate, model, vae, whisper, face_analyzer, seed, steps, guidance,
                deepcache, deepcache_interval, length_mode="pingpong", max_face_gap=DEFAULT_MAX_GAP,
                strict_faces=False, score=False) -> io.NodeOutput:
        options = node_options(seed, steps, guidance, deepcache, deepcache_interval, length_mode, max_face_gap,
                               strict_faces)
        source = TensorFrameSource(images, fps=to_fraction(frame_rate))  # converted to uint8 window by window
        pipe = make_pipeline(model, vae, whisper, face_analyzer, options)
        plan, waveform, sample_rate, notes = prepare(pipe, model, source, audio, options)
        sink = TensorSink(len(plan), source.frame_size, torch.float32)  # the output IMAGE, filled window by window
        ui = stream(pipe, source, plan, waveform, sample_rate, sink, notes, options)
        out_audio = waveform_to_audio(output_waveform(waveform, sample_rate, plan), sample_rate)
        ui = add_output_score(ui, score, sink.frames, plan.fps, out_audio, face_analyzer)
        return io.NodeOutput(sink.frames, out_audio, ui=ui)


NODES = [LatentSyncLipSyncVideo, LatentSyncLipSyncImages]
