"""The face backend choice: `auto` takes InsightFace when buffalo_l is present or can be downloaded (here from a
local stand-in of the model zoo), the offline detector otherwise, and always says why."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from latentsync import hub
from latentsync.face.backend_choice import choose_face_backend
from test_hub import serve


def stand_in_pack(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in hub.INSIGHTFACE_FILES:
        (folder / name).write_bytes(b"stand-in")
    return folder


@pytest.fixture
def online(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)


def test_auto_picks_insightface_when_buffalo_l_is_present(tmp_path):
    pack = stand_in_pack(tmp_path / "insightface/models/buffalo_l")
    choice = choose_face_backend("auto", tmp_path, download=False)
    assert (choice.backend, choice.models_dir) == ("insightface", pack)
    assert choice.reason == f"buffalo_l found in {pack}"
    assert choice.describe() == f"auto -> InsightFace buffalo_l: buffalo_l found in {pack}"


def test_auto_looks_in_every_insightface_folder_first(tmp_path):
    elsewhere = stand_in_pack(tmp_path / "shared/models/buffalo_l")  # e.g. another models folder of ComfyUI's
    choice = choose_face_backend("auto", tmp_path / "models", download=False, search=[tmp_path / "nope", elsewhere])
    assert (choice.backend, choice.models_dir) == ("insightface", elsewhere)


def test_auto_falls_back_to_offline_when_absent_and_downloads_are_off(tmp_path):
    (tmp_path / "insightface/models/buffalo_l").mkdir(parents=True)
    (tmp_path / "insightface/models/buffalo_l/det_10g.onnx").write_bytes(b"half a pack")
    choice = choose_face_backend("auto", tmp_path, download=False, no_download_reason="download_missing is off")
    assert (choice.backend, choice.models_dir) == ("offline", None)
    target = tmp_path / "insightface/models/buffalo_l"
    assert choice.reason == f"buffalo_l is not in {target} and download_missing is off"
    assert choice.describe().startswith("auto -> offline RetinaFace: buffalo_l is not in")


def test_auto_falls_back_to_offline_when_the_hub_is_off(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    choice = choose_face_backend("auto", tmp_path, download=True)
    assert choice.backend == "offline"
    target = tmp_path / "insightface/models/buffalo_l"
    assert choice.reason == f"buffalo_l is not in {target} and downloads are disabled (HF_HUB_OFFLINE is set)"
    assert not (tmp_path / "insightface/models/buffalo_l").exists()


def test_auto_downloads_buffalo_l_when_it_can(tmp_path, monkeypatch, online):
    from insightface.utils import storage

    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as zf:
        for name in hub.INSIGHTFACE_FILES:
            zf.writestr(name, b"stand-in")
    with serve({"/buffalo_l.zip": data.getvalue()}) as base:
        monkeypatch.setattr(storage, "model_zoo_download_url", lambda name: f"{base}/{name}")
        choice = choose_face_backend("auto", tmp_path, download=True)
    pack = tmp_path / "insightface/models/buffalo_l"
    assert (choice.backend, choice.models_dir) == ("insightface", pack)
    assert choice.reason == f"buffalo_l downloaded to {pack}"
    with serve({}) as base:  # the zoo answers 404: offline, with the download error as the reason
        monkeypatch.setattr(storage, "model_zoo_download_url", lambda name: f"{base}/{name}")
        failed = choose_face_backend("auto", tmp_path / "other", download=True)
    assert failed.backend == "offline" and "could not be downloaded (download failed" in failed.reason


def test_auto_without_the_insightface_package_is_offline(tmp_path, monkeypatch):
    import importlib.util

    stand_in_pack(tmp_path / "insightface/models/buffalo_l")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "insightface" else real(name, *a))
    choice = choose_face_backend("auto", tmp_path)
    assert (choice.backend, choice.reason) == ("offline", "the insightface package is not installed (the pack's install.py installs it)")


def test_explicit_choices_are_kept(tmp_path):
    assert choose_face_backend("offline", tmp_path).backend == "offline"
    with pytest.raises(hub.ModelNotFoundError, match="buffalo_l") as info:
        choose_face_backend("insightface", tmp_path, download=False)
    assert info.value.reason.startswith("missing det_10g.onnx")
    pack = stand_in_pack(tmp_path / "insightface/models/buffalo_l")
    choice = choose_face_backend("insightface", tmp_path, download=False)
    assert (choice.backend, choice.models_dir, choice.describe()) == (
        "insightface", pack, f"InsightFace buffalo_l: chosen in the settings; found in {pack}")
    with pytest.raises(ValueError, match="auto, insightface, offline"):
        choose_face_backend("dlib", tmp_path)
