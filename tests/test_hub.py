"""Model location and download, against local files and tiny HTTP servers on 127.0.0.1 only (never the internet)."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import subprocess
import sys
import threading
import zipfile
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from latentsync import hub
from latentsync.hub import (
    MASK_FILE,
    CorruptDownloadError,
    ModelFile,
    ModelNotFoundError,
    locate_file,
    locate_insightface,
    locate_model_set,
    unet_file,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = Path(__file__).resolve().parents[1]


@contextmanager
def serve(files: dict[str, bytes], log: list | None = None):
    """HTTP server on 127.0.0.1 serving ``files`` by URL path, with HEAD, Range and HF-style metadata headers."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output quiet
            return

        def _headers(self, body: bytes, status: int = 200, extra: dict | None = None):
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", '"' + hashlib.sha256(body).hexdigest() + '"')
            self.send_header("X-Repo-Commit", COMMIT)
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()

        def do_HEAD(self):
            if log is not None:
                log.append(("HEAD", self.path, None))
            body = files.get(self.path.split("?")[0])
            if body is None:
                self.send_error(404)
                return
            self._headers(body)

        def do_GET(self):
            rng = self.headers.get("Range")
            if log is not None:
                log.append(("GET", self.path, rng))
            body = files.get(self.path.split("?")[0])
            if body is None:
                self.send_error(404)
                return
            if rng and rng.startswith("bytes="):
                start = int(rng[6:].split("-")[0])
                if start >= len(body):
                    self.send_error(416)
                    return
                chunk = body[start:]
                self._headers(chunk, 206, {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"})
                self.wfile.write(chunk)
                return
            self._headers(body)
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def fake_mask_file(content: bytes) -> ModelFile:
    return ModelFile(
        name="mouth mask", relpath="latentsync/mask.png", url="unused", sha256=hashlib.sha256(content).hexdigest()
    )


def populate(root: Path, version: str = "1.5") -> None:
    for rel in (
        f"latentsync/v{version}/latentsync_unet.pt",
        "latentsync/whisper/tiny.pt",
        "latentsync/mask.png",
        "vae/vae-ft-mse-840000-ema-pruned.safetensors",
        "insightface/models/buffalo_l/det_10g.onnx",
        "insightface/models/buffalo_l/2d106det.onnx",
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")


def test_existing_files_found_without_network(tmp_path, monkeypatch):
    populate(tmp_path, "1.6")

    def no_network(*args, **kwargs):
        raise AssertionError("network must not be used when every file is present")

    monkeypatch.setattr(hub, "_hf_download", no_network)
    monkeypatch.setattr(hub, "_url_download", no_network)
    models = locate_model_set(tmp_path, "1.6", download=True)
    assert models.unet == tmp_path / "latentsync/v1.6/latentsync_unet.pt"
    assert models.whisper == tmp_path / "latentsync/whisper/tiny.pt"
    assert models.vae == tmp_path / "vae/vae-ft-mse-840000-ema-pruned.safetensors"
    assert models.mask == tmp_path / "latentsync/mask.png"
    assert models.insightface_dir == tmp_path / "insightface/models/buffalo_l"
    assert models.unet_config is None and not models.is_tiny


def test_mask_checksum_matches_the_face_module():
    from latentsync.face.mask import MASK_SHA256

    assert hub.MASK_SHA256 == MASK_SHA256 == MASK_FILE.sha256


def test_diffusers_vae_folder_and_unet_config_found(tmp_path):
    """Without the single file, a complete diffusers folder of the same weights is used (never downloaded)."""
    populate(tmp_path)
    (tmp_path / "vae/vae-ft-mse-840000-ema-pruned.safetensors").unlink()
    for f in ("config.json", "diffusion_pytorch_model.safetensors"):
        (tmp_path / "vae/sd-vae-ft-mse" / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "vae/sd-vae-ft-mse" / f).write_bytes(b"x")
    (tmp_path / "latentsync/v1.5/unet_config.yaml").write_text("model:\n  block_out_channels: [32, 32]\n")
    models = locate_model_set(tmp_path, "1.5", download=False)
    assert models.vae == tmp_path / "vae/sd-vae-ft-mse"
    assert models.unet_config == tmp_path / "latentsync/v1.5/unet_config.yaml"
    assert models.unet_config_dict() == {"block_out_channels": [32, 32]}


VAE_PATH = "/stabilityai/sd-vae-ft-mse-original/resolve/main/vae-ft-mse-840000-ema-pruned.safetensors"


def test_vae_is_the_single_file_comfyui_reads_with_the_published_checksum():
    assert hub.VAE_FILE.relpath == "vae/vae-ft-mse-840000-ema-pruned.safetensors"
    assert hub.VAE_FILE.download_url == "https://huggingface.co" + VAE_PATH
    assert hub.VAE_FILE.sha256 == "735e4c3a447a3255760d7f86845f09f937809baa529c17370d83e4c3758f3c75"


def test_model_set_downloads_the_single_file_vae_and_checks_it(tmp_path, monkeypatch):
    """An empty models folder: every official file is fetched (here from a local endpoint), the VAE as the single
    file, verified against its checksum (a payload with another checksum is deleted and reported)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    payload = b"stand-in VAE weights" * 50
    monkeypatch.setattr(hub, "VAE_FILE", dataclasses.replace(hub.VAE_FILE, sha256=hashlib.sha256(payload).hexdigest()))
    mask = b"mask bytes"
    monkeypatch.setattr(hub, "MASK_FILE", fake_mask_file(mask))
    files = {"/ByteDance/LatentSync-1.5/resolve/main/latentsync_unet.pt": b"unet",
             "/ByteDance/LatentSync-1.6/resolve/main/whisper/tiny.pt": b"whisper",
             VAE_PATH: payload, "/mask.png": mask}
    with serve(files) as base:
        models = locate_model_set(tmp_path, "1.5", include_insightface=False, endpoint=base, mask_url=base + "/mask.png")
    assert models.vae == tmp_path / "vae/vae-ft-mse-840000-ema-pruned.safetensors"
    assert models.vae.read_bytes() == payload and not (tmp_path / "vae/sd-vae-ft-mse").exists()

    models.vae.unlink()
    monkeypatch.setattr(hub, "VAE_FILE", dataclasses.replace(hub.VAE_FILE, sha256="0" * 64))
    with serve(files) as base:
        with pytest.raises(CorruptDownloadError, match="corrupt download") as info:
            hub.locate_vae(tmp_path, endpoint=base)
    assert "0" * 64 in str(info.value) and "deleted" in str(info.value)
    assert not models.vae.exists()


def test_fetch_models_verifies_the_vae_checksum(tmp_path):
    """`python -m latentsync.tools.fetch_models` against a local Hugging Face endpoint (HF_ENDPOINT) that serves
    other bytes under the VAE's name: the published checksum rejects them, nothing stays, exit status 1."""
    files = {"/ByteDance/LatentSync-1.5/resolve/main/latentsync_unet.pt": b"unet",
             "/ByteDance/LatentSync-1.6/resolve/main/whisper/tiny.pt": b"whisper",
             VAE_PATH: b"not the real VAE"}
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    with serve(files) as base:
        run = subprocess.run([sys.executable, "-m", "latentsync.tools.fetch_models", "--models", str(tmp_path),
                              "--face-backend", "offline"], cwd=REPO, env={**env, "HF_ENDPOINT": base},
                             capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "corrupt download" in run.stderr and hub.VAE_SHA256 in run.stderr
    assert (tmp_path / "latentsync/v1.5/latentsync_unet.pt").read_bytes() == b"unet"
    assert not (tmp_path / "vae/vae-ft-mse-840000-ema-pruned.safetensors").exists()


def test_missing_file_error_names_file_source_and_folder(tmp_path):
    with pytest.raises(ModelNotFoundError) as info:
        locate_file(tmp_path, unet_file("1.5"), download=False)
    msg = str(info.value)
    assert str(tmp_path / "latentsync/v1.5/latentsync_unet.pt") in msg
    assert "ByteDance/LatentSync-1.5" in msg and "latentsync_unet.pt" in msg
    assert f"put it in: {tmp_path / 'latentsync/v1.5'}" in msg
    assert "download is off" in msg
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_offline_env_blocks_every_download(tmp_path, monkeypatch, var):
    monkeypatch.setenv(var, "1")

    def no_network(*args, **kwargs):
        raise AssertionError("offline: no download may be attempted")

    monkeypatch.setattr(hub, "_hf_download", no_network)
    monkeypatch.setattr(hub, "_url_download", no_network)
    with pytest.raises(ModelNotFoundError, match=var) as info:
        locate_model_set(tmp_path, "1.6", download=True)
    assert "ByteDance/LatentSync-1.6" in str(info.value)
    with pytest.raises(ModelNotFoundError, match="raw.githubusercontent.com/bytedance/LatentSync") as info:
        locate_file(tmp_path, MASK_FILE)
    assert str(tmp_path / "latentsync") in str(info.value)
    with pytest.raises(ModelNotFoundError, match="buffalo_l") as info:
        locate_insightface(tmp_path)
    assert var in str(info.value) and "det_10g.onnx" in str(info.value)


def test_failed_downloads_give_model_not_found(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    with serve({}) as base:  # a live endpoint that has no such file (404)
        with pytest.raises(ModelNotFoundError, match="download failed") as info:
            locate_file(tmp_path, hub.WHISPER_FILE, endpoint=base)
    assert "whisper/tiny.pt" in str(info.value)
    assert not (tmp_path / "latentsync/whisper/tiny.pt").exists()
    dead = base  # the server is shut down: nothing listens on this port any more (connection refused)
    with pytest.raises(ModelNotFoundError, match="download from .* failed"):
        locate_file(tmp_path, MASK_FILE, url=dead + "/mask.png", timeout=5)
    assert not (tmp_path / "latentsync/mask.png").exists()


def test_hf_download_from_local_endpoint(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)  # in case the env set it at import
    payload = b"whisper weights" * 100
    with serve({"/ByteDance/LatentSync-1.6/resolve/main/whisper/tiny.pt": payload}) as base:
        path = locate_file(tmp_path, hub.WHISPER_FILE, endpoint=base)
    assert path == tmp_path / "latentsync/whisper/tiny.pt"
    assert path.read_bytes() == payload


def test_mask_download_checksum_ok_and_resume(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    content = bytes(range(256)) * 40
    spec = fake_mask_file(content)
    part = tmp_path / "latentsync/mask.png.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(content[:1000])  # an interrupted earlier download
    log: list = []
    with serve({"/mask.png": content}, log) as base:
        path = locate_file(tmp_path, spec, url=base + "/mask.png")
    assert path.read_bytes() == content and not part.exists()
    assert ("GET", "/mask.png", "bytes=1000-") in log


def test_corrupt_mask_download_is_detected_and_removed(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with serve({"/mask.png": b"not the official mask"}) as base:
        with pytest.raises(CorruptDownloadError) as info:
            locate_file(tmp_path, MASK_FILE, url=base + "/mask.png")
    msg = str(info.value)
    assert "corrupt download" in msg and hub.MASK_SHA256 in msg and "deleted" in msg
    assert isinstance(info.value, ModelNotFoundError)
    assert not (tmp_path / "latentsync/mask.png").exists()
    assert not (tmp_path / "latentsync/mask.png.part").exists()


def test_model_set_downloads_mask_through_parameter(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    populate(tmp_path)
    (tmp_path / "latentsync/mask.png").unlink()
    with serve({"/m.png": b"wrong bytes"}) as base:
        with pytest.raises(CorruptDownloadError):
            locate_model_set(tmp_path, "1.5", mask_url=base + "/m.png")


def test_tiny_set_is_never_completed_with_downloads(tmp_path, monkeypatch):
    populate(tmp_path, "1.5")
    (tmp_path / hub.TINY_MARKER).write_text("random weights\n")
    for f in ("det_10g.onnx", "2d106det.onnx"):
        (tmp_path / "insightface/models/buffalo_l" / f).unlink()

    def no_network(*args, **kwargs):
        raise AssertionError("a tiny set must not trigger downloads")

    monkeypatch.setattr(hub, "_hf_download", no_network)
    models = locate_model_set(tmp_path, "1.5", download=True)
    assert models.is_tiny and models.insightface_dir is None
    with pytest.raises(ModelNotFoundError, match="tiny random-weight set"):
        locate_model_set(tmp_path, "1.6", download=True)


def test_insightface_download_through_its_own_zoo(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    from insightface.utils import storage

    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as zf:
        zf.writestr("det_10g.onnx", b"det")
        zf.writestr("2d106det.onnx", b"lmk")
        zf.writestr("w600k_r50.onnx", b"rec")
    existing = tmp_path / "insightface/models/buffalo_l/2d106det.onnx"
    existing.parent.mkdir(parents=True)
    existing.write_bytes(b"user copy")  # present files are kept as they are
    with serve({"/buffalo_l.zip": data.getvalue()}) as base:
        monkeypatch.setattr(storage, "model_zoo_download_url", lambda name: f"{base}/{name}")
        pack = locate_insightface(tmp_path)
    assert (pack / "det_10g.onnx").read_bytes() == b"det"
    assert existing.read_bytes() == b"user copy"
    assert sorted(p.name for p in (tmp_path / "insightface").iterdir()) == ["models"]  # staging removed

    (pack / "det_10g.onnx").unlink()
    with serve({"/buffalo_l.zip": b"this is not a zip"}) as base:
        monkeypatch.setattr(storage, "model_zoo_download_url", lambda name: f"{base}/{name}")
        with pytest.raises(ModelNotFoundError, match="corrupt download"):
            locate_insightface(tmp_path)
    assert not (pack / "det_10g.onnx").exists()
    assert sorted(p.name for p in (tmp_path / "insightface").iterdir()) == ["models"]


def test_bad_version_and_missing_root(tmp_path):
    with pytest.raises(ValueError, match="unknown LatentSync version"):
        locate_model_set(tmp_path, "2.0")
    with pytest.raises(ModelNotFoundError, match="models folder not found"):
        locate_model_set(tmp_path / "nope")
