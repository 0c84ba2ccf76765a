"""Detect & align faces: IMAGE frames -> aligned faces (+ IMAGE of the crops, MASK of the face region)."""
from __future__ import annotations

from comfy_api.latest import io

from ..latentsync.options import FACE_SELECTIONS, LipSyncOptions

from . import runtime
from .types import (FaceAnalyzer, Faces, FaceTrack, LatentSyncModel, face_region_mask, image_to_uint8,
                    uint8_to_image)

SELECTION_MODES = list(FACE_SELECTIONS)
DEFAULT_THRESHOLD = LipSyncOptions.__dataclass_fields__["face_threshold"].default


def face_choice_inputs(what: str = "used", optional: bool = False, modes: list[str] | None = None) -> list:
    """The face_selection / face_index inputs: which face is ``what`` when a frame has several (`modes`: default
    largest and index; the lip-sync and detect nodes also offer center)."""
    modes = modes or ["largest", "index"]
    centre = ", or the one nearest the centre of the frame" if "center" in modes else ""
    return [
        io.Combo.Input("face_selection", options=modes, default="largest", optional=optional,
                       tooltip=f"Which face is {what} when there are several: the largest, or the n-th from the left "
                               f"(face_index){centre}. The chosen person is then tracked across frames."),
        io.Int.Input("face_index", default=0, min=0, max=64, optional=optional,
                     tooltip="With face_selection = index: 0 is the leftmost face."),
    ]


def face_threshold_input() -> io.Float.Input:
    """Optional (appended last): the detection confidence a face needs; the default is today's (official) 0.5."""
    return io.Float.Input("face_threshold", default=DEFAULT_THRESHOLD, min=0.0, max=1.0, step=0.05,
                          optional=True,
                          tooltip="Detection confidence a face needs to be used (official: 0.5). Raise it to ignore "
                                  "faint or background faces. The detector's own floor still applies (InsightFace "
                                  "0.5, the offline detector 0.8).")


def detect_faces(analyzer, model, images, face_selection: str = "largest", face_index: int = 0,
                 progress: runtime.Progress | None = None, face_threshold: float = DEFAULT_THRESHOLD) -> FaceTrack:
    from ..latentsync.face.align import FaceAligner  # noqa: PLC0415 - heavy (kornia, OpenCV): imported when run
    from ..latentsync.pipeline import detect_and_align  # noqa: PLC0415

    frames = image_to_uint8(images)
    selector = LipSyncOptions(face_selection=face_selection, face_index=int(face_index),
                              face_threshold=float(face_threshold)).validate().face_selector(frames.shape[1:3])
    aligner = FaceAligner(model.resolution, device=runtime.torch_device())
    progress = progress or runtime.Progress(frames.shape[0])
    aligned = detect_and_align(frames, analyzer.detector, aligner, selector, progress=progress)
    return FaceTrack(aligned=aligned, mask=model.mask, version=model.version)


class LatentSyncDetectFaces(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncDetectFaces",
            display_name="LatentSync Detect & Align Faces",
            category="LatentSync",
            description="Finds one face per frame and warps it to LatentSync's face template. Frames without a face "
                        "are marked and later passed through unchanged.",
            inputs=[
                FaceAnalyzer.Input("face_analyzer", tooltip="From Load LatentSync Face Analyzer."),
                LatentSyncModel.Input("model", tooltip="The LatentSync model: sets the crop resolution (256 for "
                                                       "1.5, 512 for 1.6) and the mouth mask."),
                io.Image.Input("images", tooltip="Video frames (an IMAGE batch, in playback order)."),
                *face_choice_inputs("aligned", modes=SELECTION_MODES),
                face_threshold_input(),
            ],
            outputs=[
                Faces.Output(display_name="faces", tooltip="Aligned faces: crops, matrices, boxes, face flags."),
                io.Image.Output(display_name="aligned", tooltip="The aligned face crops (grey where no face)."),
                io.Mask.Output(display_name="face_mask", tooltip="Region each face is pasted back into, in frame "
                                                                 "coordinates (0 where no face)."),
            ],
        )

    @classmethod
    def execute(cls, face_analyzer, model, images, face_selection, face_index,
                face_threshold=DEFAULT_THRESHOLD) -> io.NodeOutput:
        track = detect_faces(face_analyzer, model, images, face_selection, face_index,
                             face_threshold=face_threshold)
        ui, _warning = runtime.face_report(track.aligned.has_face)
        mask = face_region_mask(track.aligned, runtime.torch_device())
        return io.NodeOutput(track, uint8_to_image(track.aligned.faces), mask, ui=ui)


NODES = [LatentSyncDetectFaces]
