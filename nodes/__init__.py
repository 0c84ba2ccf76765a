"""ComfyUI nodes of the LatentSync pack: one file per stage; they adapt ComfyUI's types, devices and progress to the
`latentsync` library and hold no logic of their own beyond that.

The library is imported relatively (`..latentsync`), as a sub-package of whatever name ComfyUI gives this pack, so
it never clashes with another pack's top-level `latentsync` module.
"""
from __future__ import annotations


def all_nodes() -> list:
    """Every node class of the pack, in menu order. Without OpenCV (installed by install.py, not requirements.txt) the
    pack does not load, with a message naming install.py (ComfyUI-Manager's 'Try fix' runs it)."""
    from ..latentsync.dependencies import require_opencv  # noqa: PLC0415

    require_opencv()
    from . import audio, decode, faces, latents, length, lipsync, loaders, paste, sampler  # noqa: PLC0415
    from . import score  # noqa: PLC0415
    from .runtime import register_model_folders  # noqa: PLC0415

    register_model_folders()
    return [*loaders.NODES, *lipsync.NODES, *faces.NODES, *length.NODES, *audio.NODES, *latents.NODES,
            *sampler.NODES, *decode.NODES, *paste.NODES, *score.NODES]
