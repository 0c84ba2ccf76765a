"""Start-up stays cheap: defining the pack's nodes in ComfyUI imports none of the heavy libraries the nodes use when
they run, and building the node definitions again (each /object_info) walks no model folder. Measured by the probe
of `python -m bench.startup` in a fresh interpreter with ComfyUI 0.3.75's own modules imported first."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import startup

REPO = Path(__file__).resolve().parents[1]

if not (startup.comfy_dir() / "comfy_api").is_dir():  # pragma: no cover - environment check
    if os.environ.get("CI"):  # under CI a missing ComfyUI is a failure, never a skip
        raise RuntimeError(f"ComfyUI source not found at {startup.comfy_dir()} (run scripts/setup_env.sh)")
    pytest.skip(f"ComfyUI source not found at {startup.comfy_dir()}", allow_module_level=True)

NEVER_AT_START = ("whisper", "diffusers", "kornia", "cv2", "av", "numba", "tiktoken", "insightface", "onnxruntime")


@pytest.fixture(scope="module")
def probe():
    return startup.run_probe(REPO)


def test_defining_the_nodes_imports_nothing_heavy(probe):
    assert probe["nodes"] == 15
    assert probe["heavy_imported"] == [], f"imported at start-up: {probe['heavy_imported']}"
    # the check means something: ComfyUI itself had not imported these before the pack (PyAV it has)
    assert not set(probe["heavy_before"]) & set(NEVER_AT_START) - {"av"}, probe["heavy_before"]


def test_object_info_walks_no_model_folder(probe):
    assert probe["object_info_walks"] == []


def test_import_line_is_read_from_comfyuis_log():
    log = ("Import times for custom nodes:\n   0.0 seconds: /x/custom_nodes/websocket_image_save.py\n"
           "   0.1 seconds: /tmp/b/custom_nodes/ComfyUI-LatentSync\n")
    assert startup.import_line(log) == 0.1
    assert startup.import_line("   1.5 seconds: /x/custom_nodes/Other") is None
    with pytest.raises(RuntimeError, match="could not import"):
        startup.import_line("   0.3 seconds (IMPORT FAILED): /b/custom_nodes/ComfyUI-LatentSync")
