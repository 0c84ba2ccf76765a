"""One-node paths: VIDEO + AUDIO -> VIDEO, and IMAGE + AUDIO + frame rate -> IMAGE + AUDIO.

Both stream the library's `LipSyncPipeline.run` (the same stage functions as the modular nodes) window by window.
The VIDEO node reads its input lazily from the file behind ComfyUI's VIDEO (Load Video gives one; other VIDEO values
fall back to their frames in memory) and writes the result progressively, in one H.264 + AAC encode, to ComfyUI's
temp folder (a `.part` file renamed when complete; Cancel or an error leaves nothing), returning a VIDEO backed by
that file: Save Video then copies its streams without encoding again. The IMAGE node converts one window at a time
and fills a single output tensor. Length modes, face-gap bridging and strict faces are the library's.
"""
from __future__ import annotations

import torch
from comfy_api.latest import InputImpl, io

from ..latentsync.face.gaps import DEFAULT_MAX_GAP
from ..latentsync.options import LipSyncOptions
from ..latentsync.timeline import LENGTH_MODE_ALIASES, LENGTH_MODES
from ..latentsync.x264 import DEFAULT_CRF, DEFAULT_PRESET

from . import runtime
from .faces import DEFAULT_THRESHOLD, SELECTION_MODES, face_choice_inputs, face_threshold_input
from .output import frames_preview, output_inputs, temp_video_path, validate_output, video_preview
from .sampler import small_card_inputs
from .score import add_output_score, score_switch
from .types import (FaceAnalyzer, LatentSyncModel, WhisperModel, audio_to_waveform, image_to_uint8, open_video,
                    to_fraction, waveform_to_audio)

def node_options(seed, steps, guidance, deepcache, deepcache_interval, length_mode="pingpong",
                 max_face_gap=DEFAULT_MAX_GAP, strict_faces=False, **more) -> LipSyncOptions:
    """The one-node paths' inputs as the library's lip-sync options (validated, with the command line's texts)."""
    return LipSyncOptions(seed=int(seed), steps=int(steps), guidance=float(guidance), deepcache=bool(deepcache),
                          deepcache_interval=int(deepcache_interval), length_mode=length_mode,
                          max_gap=int(max_face_gap), strict_faces=bool(strict_faces), **more).validate()


def make_pipeline(model, vae, whisper, face_analyzer, options: LipSyncOptions, frame_size: tuple[int, int]):
    from ..latentsync.pipeline import WINDOW, LipSyncPipeline  # noqa: PLC0415 - heavy: imported when a node runs

    return LipSyncPipeline(
        unet=runtime.ManagedUNet(model.patcher, runtime.unet_memory_estimate(
            model.resolution, WINDOW, model.dtype, options.cfg_batch, options.ff_chunks)),
        vae_codec=runtime.ComfyVAECodec(vae),
        audio_encoder=runtime.whisper_on_device(whisper),
        face_detector=face_analyzer.detector,
        mask=model.mask,
        resolution=model.resolution,
        device=runtime.torch_device(),
        selector=options.face_selector(frame_size),
    )


def prepare(pipe, model, source, audio: dict, options: LipSyncOptions):
    """The output plan for this audio and length mode, and the notes shown on the node (on a CPU: how long a
    window and the whole run will take, said before it starts). Returns (plan, waveform, sample_rate, notes)."""
    from ..latentsync.pipeline import WINDOW  # noqa: PLC0415
    from ..latentsync.precision import cpu_time_warning  # noqa: PLC0415

    waveform, sample_rate = audio_to_waveform(audio)
    plan = pipe.plan(source.timing, waveform, sample_rate, options.length_mode)
    notes = []
    if runtime.torch_device().type == "cpu":
        notes.append(cpu_time_warning(model.resolution, model.dtype, options.steps,
                                      options.deepcache_interval if options.deepcache else 1, options.guidance,
                                      -(-len(plan) // WINDOW)))
        runtime.LOG.warning("LatentSync: %s", notes[-1])
    return plan, waveform, sample_rate, notes


def stream(pipe, source, plan, waveform, sample_rate: int, sink, notes: list[str], options: LipSyncOptions) -> dict:
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
                               "to the audio's length (official; bounce, ComfyUI's name for it, is accepted too); "
                               "loop: from the start again; cut_off: the shorter of the two; silence: the whole "
                               "video, frames after the audio get silence; freeze: hold the last frame. The audio "
                               "is always yours, at its own rate and channels."),
        io.Int.Input("max_face_gap", default=DEFAULT_MAX_GAP, min=0, max=250, optional=True,
                     tooltip="Frames without a detected face between two with one: gaps up to this long are "
                             "bridged by interpolating the alignment (no flicker); longer ones pass through "
                             "unchanged. 0 = off."),
        io.Boolean.Input("strict_faces", default=False, optional=True,
                         tooltip="Fail on the first frame without a face instead of passing it through "
                                 "(a video with no face at all then fails instead of coming back unchanged)."),
    ]


def _speaker_inputs() -> list:
    """Which face to lip-sync; optional and after every older input, defaults as before they existed."""
    return [*face_choice_inputs("lip-synced", optional=True, modes=SELECTION_MODES), face_threshold_input()]


def validate_length_mode(length_mode) -> bool | str:
    """Checked when the prompt is queued: ComfyUI 0.3.75 does not check a V3 combo's value against its options, so
    an unknown length mode is rejected here (with the choices) instead of failing after the video is opened."""
    if length_mode is None or length_mode in LENGTH_MODES or length_mode in LENGTH_MODE_ALIASES:
        return True
    return f"unknown length mode {length_mode!r}; choose one of {', '.join(LENGTH_MODES)} (bounce = pingpong)"


def validate(length_mode="pingpong", crf=None, preset=None) -> bool | str:
    checked = validate_length_mode(length_mode)
    return validate_output(crf, preset) if checked is True else checked


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
                *_speaker_inputs(),
                *output_inputs("the result video"),
                *small_card_inputs(),
            ],
            outputs=[io.Video.Output(display_name="video", tooltip="The lip-synced video with the audio.")],
            is_output_node=True,  # shows the video on the node; saves it when filename_prefix is set
        )

    @classmethod
    def validate_inputs(cls, length_mode="pingpong", crf=None, preset=None) -> bool | str:
        return validate(length_mode, crf, preset)

    @classmethod
    def execute(cls, video, model, vae, whisper, face_analyzer, seed, steps, guidance, deepcache,
                deepcache_interval, audio=None, length_mode="pingpong", max_face_gap=DEFAULT_MAX_GAP,
                strict_faces=False, score=False, face_selection="largest", face_index=0,
                face_threshold=DEFAULT_THRESHOLD, filename_prefix="", crf=DEFAULT_CRF,
                preset=DEFAULT_PRESET, cfg_batch="joint", ff_chunks=1, compile=False) -> io.NodeOutput:
        from ..latentsync.video_io import MediaError, VideoFileSource, VideoWriter, read_audio  # noqa: PLC0415

        options = node_options(seed, steps, guidance, deepcache, deepcache_interval, length_mode, max_face_gap,
                               strict_faces, face_selection=face_selection, face_index=int(face_index),
                               face_threshold=float(face_threshold), cfg_batch=cfg_batch, ff_chunks=int(ff_chunks),
                               compile=bool(compile))
        source, own_audio, path = open_video(video)
        try:
            if audio is None:
                audio = own_audio
                if audio is None:
                    raise MediaError(f"{path or 'the video'} has no audio track: connect an AUDIO input "
                                     "(e.g. Load Audio)")
            pipe = make_pipeline(model, vae, whisper, face_analyzer, options, source.frame_size)
            plan, waveform, sample_rate, notes = prepare(pipe, model, source, audio, options)
            out = temp_video_path()
            with VideoWriter(out, plan.fps, source.frame_size, audio=waveform, sample_rate=sample_rate,
                             audio_samples=plan.audio_samples(sample_rate), base=None if plan.constant else plan.base,
                             inputs=[path] if path else (), crf=crf, preset=preset,
                             log=lambda message: runtime.LOG.warning("LatentSync: %s", message)) as writer:
                ui = stream(pipe, source, plan, waveform, sample_rate, writer, notes, options)
                writer.close()
        finally:
            if isinstance(source, VideoFileSource):
                source.close()
        if score:  # what the user gets: the written file's frames and its (AAC) audio track
            ui = add_output_score(ui, score, out, plan.fps, waveform_to_audio(*read_audio(out)), face_analyzer,
                                  num_frames=len(plan))
        ui.update(video_preview(cls, out, filename_prefix))
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
                *_speaker_inputs(),
                *output_inputs("the result (the frames with the audio)"),
                *small_card_inputs(),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="Lip-synced frames."),
                io.Audio.Output(display_name="audio", tooltip="The audio, cut (or padded) to the frames' duration."),
            ],
            is_output_node=True,  # previews frames on the node; saves a video when filename_prefix is set
        )

    @classmethod
    def validate_inputs(cls, length_mode="pingpong", crf=None, preset=None) -> bool | str:
        return validate(length_mode, crf, preset)

    @classmethod
    def execute(cls, images, audio, frame_rate, model, vae, whisper, face_analyzer, seed, steps, guidance,
                deepcache, deepcache_interval, length_mode="pingpong", max_face_gap=DEFAULT_MAX_GAP,
                strict_faces=False, score=False, face_selection="largest", face_index=0,
                face_threshold=DEFAULT_THRESHOLD, filename_prefix="", crf=DEFAULT_CRF,
                preset=DEFAULT_PRESET, cfg_batch="joint", ff_chunks=1, compile=False) -> io.NodeOutput:
        from ..latentsync.pipeline import WINDOW, TensorFrameSource, TensorSink, output_waveform  # noqa: PLC0415

        options = node_options(seed, steps, guidance, deepcache, deepcache_interval, length_mode, max_face_gap,
                               strict_faces, face_selection=face_selection, face_index=int(face_index),
                               face_threshold=float(face_threshold), cfg_batch=cfg_batch, ff_chunks=int(ff_chunks),
                               compile=bool(compile))
        source = TensorFrameSource(images, fps=to_fraction(frame_rate))  # converted to uint8 window by window
        pipe = make_pipeline(model, vae, whisper, face_analyzer, options, source.frame_size)
        plan, waveform, sample_rate, notes = prepare(pipe, model, source, audio, options)
        sink = TensorSink(len(plan), source.frame_size, torch.float32)  # the output IMAGE, filled window by window
        ui = stream(pipe, source, plan, waveform, sample_rate, sink, notes, options)
        out_audio = waveform_to_audio(output_waveform(waveform, sample_rate, plan), sample_rate)
        ui = add_output_score(ui, score, sink.frames, plan.fps, out_audio, face_analyzer)
        if filename_prefix:
            from ..latentsync.video_io import write_video  # noqa: PLC0415

            windows = (image_to_uint8(sink.frames[i : i + WINDOW]) for i in range(0, len(plan), WINDOW))
            video = write_video(temp_video_path(), windows, plan.fps, audio=output_waveform(waveform, sample_rate, plan),
                                sample_rate=sample_rate, crf=crf, preset=preset)
            ui.update(video_preview(cls, str(video), filename_prefix))
        else:
            ui.update(frames_preview(cls, sink.frames))
        return io.NodeOutput(sink.frames, out_audio, ui=ui)


NODES = [LatentSyncLipSyncVideo, LatentSyncLipSyncImages]
