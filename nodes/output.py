"""Where a one-node lip-sync path's result is seen and kept: ComfyUI's video preview of the file the VIDEO path
writes, a preview of frames on the IMAGE path, an optional copy in ComfyUI's output folder under a filename prefix
(what Save Video does: the streams copied, the workflow embedded), and the H.264 settings of what is written.
Every input here is optional with today's behaviour as its default: nothing saved, CRF 18, libx264's own preset."""
from __future__ import annotations

import os
import uuid

import folder_paths
import torch
from comfy_api.latest import io, ui

from ..latentsync.x264 import DEFAULT_CRF, DEFAULT_PRESET, PRESETS, check_settings

TEMP_SUBFOLDER = "latentsync"  # under ComfyUI's temp folder: the VIDEO path's file, the IMAGE path's video to save
PREVIEW_FRAMES = 16  # the IMAGE path previews at most this many frames, evenly spread


def output_inputs(what: str) -> list:
    """The optional inputs of a one-node path, appended last. `what` says what is saved ("the result video")."""
    return [
        io.String.Input("filename_prefix", default="", optional=True,
                        tooltip=f"Also save {what} as an MP4 (H.264 + AAC) in ComfyUI's output folder under this "
                                "prefix, as Save Video does (e.g. video/LatentSync; %date:yyyy-MM-dd% works). "
                                "Empty: nothing is saved here."),
        io.Int.Input("crf", default=DEFAULT_CRF, min=0, max=51, optional=True,
                     tooltip="H.264 quality of the written video: lower = better and bigger (0 = lossless, 18 = "
                             "visually lossless, 23 = x264's default, 51 = worst)."),
        io.Combo.Input("preset", options=list(PRESETS), default=DEFAULT_PRESET, optional=True,
                       tooltip="H.264 encoder speed: slower presets make smaller files at the same quality "
                               "(medium = x264's default)."),
    ]


def validate_output(crf=DEFAULT_CRF, preset=DEFAULT_PRESET) -> bool | str:
    """Checked when the prompt is queued (ComfyUI 0.3.75 does not check a V3 combo's value against its options)."""
    try:
        check_settings(DEFAULT_CRF if crf is None else crf, DEFAULT_PRESET if preset is None else preset)
    except ValueError as exc:
        return str(exc)
    return True


def temp_video_path() -> str:
    """A new file name in ComfyUI's temp folder (emptied by ComfyUI at start-up)."""
    folder = os.path.join(folder_paths.get_temp_directory(), TEMP_SUBFOLDER)
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"LatentSync_{uuid.uuid4().hex[:16]}.mp4")


def _metadata(node) -> dict | None:
    """The prompt and workflow ComfyUI gives an output node, as Save Video embeds them."""
    from comfy.cli_args import args  # noqa: PLC0415

    if args.disable_metadata:
        return None
    metadata = {}
    if node.hidden is not None and node.hidden.extra_pnginfo is not None:
        metadata.update(node.hidden.extra_pnginfo)
    if node.hidden is not None and node.hidden.prompt is not None:
        metadata["prompt"] = node.hidden.prompt
    return metadata or None


def save_copy(node, path: str, filename_prefix: str) -> ui.SavedResult:
    """Copy the finished video at `path` into the output folder as Save Video does (streams copied, not encoded
    again; the workflow embedded). The copy appears under its final name only when complete."""
    from comfy_api.latest import InputImpl  # noqa: PLC0415

    video = InputImpl.VideoFromFile(path)
    width, height = video.get_dimensions()
    folder, filename, counter, subfolder, _prefix = folder_paths.get_save_image_path(
        filename_prefix, folder_paths.get_output_directory(), width, height)
    file = f"{filename}_{counter:05}_.mp4"
    part = os.path.join(folder, f".{filename}_{counter:05}_.{uuid.uuid4().hex[:8]}.part.mp4")
    try:
        video.save_to(part, metadata=_metadata(node))
        os.replace(part, os.path.join(folder, file))
    finally:
        if os.path.exists(part):
            os.remove(part)  # our own unfinished copy
    return ui.SavedResult(file, subfolder, io.FolderType.output)


def video_preview(node, path: str, filename_prefix: str = "") -> dict:
    """The `ui` that shows the video on the node with ComfyUI's own video preview: the saved copy when
    `filename_prefix` is set (saved here), else the file in the temp folder."""
    if filename_prefix:
        result = save_copy(node, path, filename_prefix)
    else:
        result = ui.SavedResult(os.path.basename(path), TEMP_SUBFOLDER, io.FolderType.temp)
    return ui.PreviewVideo([result]).as_dict()


def frames_preview(node, images: torch.Tensor) -> dict:
    """The `ui` that shows up to PREVIEW_FRAMES frames, evenly spread, on the node (ComfyUI's image preview)."""
    n = int(images.shape[0])
    picks = torch.linspace(0, n - 1, min(n, PREVIEW_FRAMES)).round().long().unique()
    return ui.PreviewImage(images[picks], cls=node).as_dict()
