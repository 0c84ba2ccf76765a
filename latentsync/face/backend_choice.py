"""Which face detector to run, and why: ``auto`` takes InsightFace when its buffalo_l models are present (or can be
downloaded) and the offline RetinaFace otherwise; ``insightface`` and ``offline`` are taken as asked.

The answer carries a one-line reason, shown to the user (the loader node, the command line's log), so a fallback to
the offline detector is never silent.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .. import hub

FACE_BACKENDS = ("auto", "insightface", "offline")
LABELS = {"insightface": "InsightFace buffalo_l", "offline": "offline RetinaFace"}


@dataclass(frozen=True)
class FaceBackendChoice:
    requested: str  # auto | insightface | offline
    backend: str  # insightface | offline
    models_dir: Path | None  # the buffalo_l folder for insightface
    reason: str

    @property
    def label(self) -> str:
        return LABELS[self.backend]

    def describe(self) -> str:
        """E.g. "auto -> offline RetinaFace: buffalo_l is not in ... (downloads are disabled ...)"."""
        head = f"auto -> {self.label}" if self.requested == "auto" else self.label
        return f"{head}: {self.reason}"


def _complete_pack(folder: Path) -> bool:
    return all((folder / name).is_file() for name in hub.INSIGHTFACE_FILES)


def _missing_package() -> str | None:
    for module, pip_name in (("insightface", "insightface"), ("onnxruntime", "onnxruntime")):
        if importlib.util.find_spec(module) is None:
            return f"the {pip_name} package is not installed (the pack's install.py installs it)"
    return None


def choose_face_backend(requested: str, models_root: str | Path, download: bool = True,
                        search: Iterable[str | Path] = (),
                        no_download_reason: str = "downloading is off",
                        folder: str | Path | None = None) -> FaceBackendChoice:
    """Resolve ``requested`` to a backend. ``search``: more ``buffalo_l`` folders to look in before
    ``<folder>/models/buffalo_l`` (where a download goes; ``folder`` defaults to ``<models_root>/insightface``).

    ``insightface`` raises `hub.ModelNotFoundError` when buffalo_l cannot be had; ``auto`` never does: it falls back
    to ``offline`` and says why.
    """
    if requested not in FACE_BACKENDS:
        raise ValueError(f"unknown face backend {requested!r}; choose one of {', '.join(FACE_BACKENDS)}")
    if requested == "offline":
        return FaceBackendChoice(requested, "offline", None, "chosen in the settings")
    root = Path(models_root).expanduser()
    folder = Path(folder).expanduser() if folder is not None else root / "insightface"
    target = folder / "models" / hub.INSIGHTFACE_PACK
    found = next((Path(p) for p in (*search, target) if _complete_pack(Path(p))), None)
    if requested == "insightface":
        if found is not None:
            return FaceBackendChoice(requested, "insightface", found, f"chosen in the settings; found in {found}")
        pack = hub.locate_insightface(root, download=download, folder=folder)
        return FaceBackendChoice(requested, "insightface", pack, f"chosen in the settings; downloaded to {pack}")
    if (missing := _missing_package()) is not None:
        return FaceBackendChoice(requested, "offline", None, missing)
    if found is not None:
        return FaceBackendChoice(requested, "insightface", found, f"buffalo_l found in {found}")
    if not download:
        return FaceBackendChoice(requested, "offline", None, f"buffalo_l is not in {target} and {no_download_reason}")
    if (offline := hub.offline_reason()) is not None:
        return FaceBackendChoice(requested, "offline", None, f"buffalo_l is not in {target} and {offline}")
    try:
        pack = hub.locate_insightface(root, download=True, folder=folder)
    except hub.ModelNotFoundError as exc:
        return FaceBackendChoice(requested, "offline", None,
                                 f"buffalo_l is not in {target} and could not be downloaded ({exc.reason})")
    return FaceBackendChoice(requested, "insightface", pack, f"buffalo_l downloaded to {pack}")
