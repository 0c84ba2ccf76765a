"""Locate every official LatentSync file in a models folder, or download it on request.

Models root = a ComfyUI ``models/`` folder::

    latentsync/v1.5/latentsync_unet.pt      ByteDance/LatentSync-1.5 : latentsync_unet.pt
    latentsync/v1.6/latentsync_unet.pt      ByteDance/LatentSync-1.6 : latentsync_unet.pt
    latentsync/v1.x/unet_config.yaml        optional, our own U-Net config beside the weights (tiny sets)
    latentsync/whisper/tiny.pt              ByteDance/LatentSync-1.6 : whisper/tiny.pt
    latentsync/mask.png                     github.com/bytedance/LatentSync latentsync/utils/mask.png (sha256 known)
    vae/vae-ft-mse-840000-ema-pruned.safetensors
                                            stabilityai/sd-vae-ft-mse-original (sha256 known; the file ComfyUI's own
                                            Load VAE reads; a diffusers folder vae/sd-vae-ft-mse/ is also accepted)
    insightface/models/buffalo_l/           insightface model-zoo buffalo_l.zip (det_10g.onnx, 2d106det.onnx)
    latentsync/auxiliary/syncnet_v2.model   ByteDance/LatentSync-1.5 : auxiliary/syncnet_v2.model (SyncNet-v2, sync scoring)
    TINY_MODEL_SET.txt                      marker written by latentsync.tools.make_tiny (random weights)

The mask and the VAE have known checksums (the mask's from the official file, the VAE's as Hugging Face publishes
it); the other files have ``sha256=None`` (the LatentSync repos publish none).
Nothing is fetched at import time; downloads happen only in the ``locate_*`` calls with ``download=True``, and never
when ``HF_HUB_OFFLINE`` is set (read at call time).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .dependencies import missing_package_message
from .face.mask import MASK_SHA256

HF_URL = "https://huggingface.co/{repo}/resolve/main/{file}"
MASK_URL = "https://raw.githubusercontent.com/bytedance/LatentSync/main/latentsync/utils/mask.png"
TINY_MARKER = "TINY_MODEL_SET.txt"
UNET_CONFIG_NAME = "unet_config.yaml"
INSIGHTFACE_PACK = "buffalo_l"
INSIGHTFACE_FILES = ("det_10g.onnx", "2d106det.onnx")
VAE_NAME = "vae-ft-mse-840000-ema-pruned.safetensors"
VAE_SHA256 = "735e4c3a447a3255760d7f86845f09f937809baa529c17370d83e4c3758f3c75"  # as listed on Hugging Face
VAE_FOLDER = "vae/sd-vae-ft-mse"  # the same weights as a diffusers folder (accepted when present, never downloaded)
VAE_FOLDER_FILES = ("config.json", "diffusion_pytorch_model.safetensors")
# Single-file VAEs ComfyUI users usually already have (LDM format, same weights as sd-vae-ft-mse), in search order.
VAE_SINGLE_FILES = (
    VAE_NAME,
    "vae-ft-mse-840000-ema-pruned.ckpt",
    "sd-vae-ft-mse.safetensors",
)
VERSIONS = ("1.5", "1.6")
DOWNLOAD_BLOCK = 1 << 20  # bytes read and written at a time (and between two progress reports)

ByteProgress = Callable[[int, int], None]
"""`progress(bytes so far, total bytes or 0 when unknown)`, called after every block; it may raise to cancel."""


@dataclass(frozen=True)
class ModelFile:
    """One file of the model set: where it lives under the models root and where it comes from."""

    name: str
    relpath: str
    repo_id: str | None = None
    repo_file: str | None = None
    url: str | None = None
    sha256: str | None = None  # None: no published checksum

    @property
    def download_url(self) -> str:
        """Where the file is fetched from (a Hugging Face ``resolve`` link for repo files)."""
        if self.repo_id is not None:
            return HF_URL.format(repo=self.repo_id, file=self.repo_file)
        return f"{self.url}"

    @property
    def source(self) -> str:
        if self.repo_id is not None:
            return f"Hugging Face repo {self.repo_id}, file {self.repo_file} ({self.download_url})"
        return self.download_url


def in_folder(file: ModelFile, folder_kind: str) -> ModelFile:
    """The same file with its path relative to its model-type folder itself (``latentsync/whisper/tiny.pt`` ->
    ``whisper/tiny.pt``), for a folder that need not be ``<models>/latentsync`` (a ComfyUI extra_model_paths entry)."""
    prefix = folder_kind.rstrip("/") + "/"
    if not file.relpath.startswith(prefix):
        raise ValueError(f"{file.relpath} is not under {prefix}")
    return dataclasses.replace(file, relpath=file.relpath[len(prefix):])


def unet_file(version: str) -> ModelFile:
    _check_version(version)
    return ModelFile(
        name=f"LatentSync {version} U-Net",
        relpath=f"latentsync/v{version}/latentsync_unet.pt",
        repo_id=f"ByteDance/LatentSync-{version}",
        repo_file="latentsync_unet.pt",
    )


WHISPER_FILE = ModelFile(
    name="Whisper tiny encoder",
    relpath="latentsync/whisper/tiny.pt",
    repo_id="ByteDance/LatentSync-1.6",
    repo_file="whisper/tiny.pt",
)
MASK_FILE = ModelFile(name="mouth mask", relpath="latentsync/mask.png", url=MASK_URL, sha256=MASK_SHA256)
SYNCNET_V2_FILE = ModelFile(  # evaluation network (LSE-C / LSE-D); the official code fetches it from the 1.5 repo
    name="SyncNet-v2 (sync scoring)",
    relpath="latentsync/auxiliary/syncnet_v2.model",
    repo_id="ByteDance/LatentSync-1.5",
    repo_file="auxiliary/syncnet_v2.model",
)
VAE_FILE = ModelFile(
    name="SD VAE (sd-vae-ft-mse)",
    relpath=f"vae/{VAE_NAME}",
    repo_id="stabilityai/sd-vae-ft-mse-original",
    repo_file=VAE_NAME,
    sha256=VAE_SHA256,
)


class ModelNotFoundError(FileNotFoundError):
    """A model file is missing and could not (or may not) be downloaded. The message says what, from where, to where;
    ``reason`` is its last part alone (why it could not be had)."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class CorruptDownloadError(ModelNotFoundError):
    """A download finished but its checksum is wrong; the bad data was removed."""


@dataclass(frozen=True)
class ModelSet:
    """Paths of everything inference needs. ``insightface_dir`` is None only when not requested or in a tiny set."""

    version: str
    unet: Path
    unet_config: Path | None
    whisper: Path
    vae: Path
    mask: Path
    insightface_dir: Path | None
    is_tiny: bool

    def unet_config_dict(self) -> dict | None:
        """The U-Net config from ``unet_config``, or None when there is none (the architecture is then read from the
        checkpoint's shapes)."""
        return None if self.unet_config is None else read_unet_config(self.unet_config)


def read_unet_config(path: str | Path) -> dict:
    """U-Net constructor settings from a YAML file: flat, or nested under ``model:`` as in the official configs."""
    import yaml

    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a mapping of U-Net settings")
    data = dict(data)
    if isinstance(data.get("norm_eps"), str):  # YAML 1.1 reads `1e-5` (no dot) as a string
        data["norm_eps"] = float(data["norm_eps"])
    return data


def _check_version(version: str) -> None:
    if version not in VERSIONS:
        raise ValueError(f"unknown LatentSync version {version!r}; choose one of {', '.join(VERSIONS)}")


def offline_reason() -> str | None:
    """Why downloads are disabled right now (env read at call time), or None."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return f"downloads are disabled ({var} is set)"
    return None


def _not_found(file: ModelFile, root: Path, reason: str, cls: type[ModelNotFoundError] = ModelNotFoundError):
    target = root / file.relpath
    return cls(
        f"{file.name} not found: {target}\n"
        f"  source: {file.source}\n"
        f"  put it in: {target.parent}{os.sep} (as {target.name})\n"
        f"  reason: {reason}",
        reason,
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _hf_download(file: ModelFile, root: Path, endpoint: str | None) -> Path:
    from huggingface_hub import hf_hub_download

    target = root / file.relpath
    # local_dir + repo path: "whisper/tiny.pt" lands in <local_dir>/whisper/tiny.pt.
    depth = len(Path(file.repo_file).parts) - 1
    local_dir = target.parents[depth]
    local_dir.mkdir(parents=True, exist_ok=True)
    try:
        got = Path(hf_hub_download(file.repo_id, file.repo_file, local_dir=str(local_dir), endpoint=endpoint))
    except (OSError, ValueError) as exc:  # network, HTTP (HfHubHTTPError is an OSError), offline mode
        raise _not_found(file, root, f"download failed: {type(exc).__name__}: {exc}") from exc
    if got.resolve() != target.resolve() or not target.is_file():
        raise _not_found(file, root, f"download landed at {got}, not at the expected place")
    _check_sha256(file, root, target, f"Hugging Face repo {file.repo_id}")
    return target


def _check_sha256(file: ModelFile, root: Path, path: Path, origin: str) -> None:
    """Delete ``path`` and raise `CorruptDownloadError` when its checksum is not the expected one."""
    if file.sha256 is None:
        return
    actual = sha256_of(path)
    if actual != file.sha256:
        path.unlink()
        raise _not_found(
            file,
            root,
            f"corrupt download from {origin}: sha256 {actual} != expected {file.sha256}; the bad file was deleted, "
            "try again or fetch it by hand",
            CorruptDownloadError,
        )


def _hf_resolve_url(file: ModelFile, endpoint: str | None) -> str:
    """The file's Hugging Face ``resolve`` link on ``endpoint`` (default: ``HF_ENDPOINT``, read at call time)."""
    base = (endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    return f"{base}/{file.repo_id}/resolve/main/{urllib.parse.quote(file.repo_file)}"


def _url_download(file: ModelFile, root: Path, url: str, timeout: float, progress: ByteProgress | None = None) -> Path:
    """urllib download to ``<target>.part`` with HTTP Range resume, checksum, then rename into place. ``progress``
    is called after every block; an exception it raises (a Cancel) stops the download and leaves the ``.part``
    file, never a file under the final name (the next download resumes from it)."""
    target = root / file.relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            append = have > 0 and response.status == 206  # the server honoured the Range request
            done = have if append else 0
            length = response.headers.get("Content-Length", "")
            total = done + int(length) if length.isdigit() else 0
            with open(part, "ab" if append else "wb") as out:
                while block := response.read(DOWNLOAD_BLOCK):
                    out.write(block)
                    done += len(block)
                    if progress is not None:
                        progress(done, total)
    except urllib.error.HTTPError as exc:
        if not (exc.code == 416 and have > 0):  # 416: the .part is already complete
            raise _not_found(file, root, f"download from {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise _not_found(file, root, f"download from {url} failed: {exc}") from exc
    _check_sha256(file, root, part, url)
    os.replace(part, target)
    return target


def locate_file(
    models_root: str | Path,
    file: ModelFile,
    download: bool = True,
    url: str | None = None,
    endpoint: str | None = None,
    timeout: float = 60.0,
    no_download_reason: str = "automatic download is off",
    progress: ByteProgress | None = None,
) -> Path:
    """Path of ``file`` under ``models_root``; downloads it there when missing and allowed.

    ``url`` overrides a URL source (tests, mirrors); ``endpoint`` overrides the Hugging Face endpoint. With
    ``progress``, a Hugging Face file is streamed from its ``resolve`` link by our own resumable download, which
    reports every block (and stops when ``progress`` raises); without it, ``huggingface_hub`` downloads it.
    """
    root = Path(models_root).expanduser()
    target = root / file.relpath
    if target.is_file():
        return target
    if target.exists():
        raise _not_found(file, root, f"{target} exists but is not a file")
    if not download:
        raise _not_found(file, root, no_download_reason)
    if (reason := offline_reason()) is not None:
        raise _not_found(file, root, reason)
    if file.repo_id is not None and progress is None:
        return _hf_download(file, root, endpoint)
    if file.repo_id is not None:
        return _url_download(file, root, _hf_resolve_url(file, endpoint), timeout, progress)
    return _url_download(file, root, url or file.url, timeout, progress)


def locate_vae(
    models_root: str | Path,
    download: bool = True,
    endpoint: str | None = None,
    no_download_reason: str = "automatic download is off",
) -> Path:
    """The VAE: a known single file in ``vae/`` (``vae-ft-mse-840000-ema-pruned.safetensors`` first, the file
    ComfyUI's Load VAE reads), else a complete diffusers folder ``vae/sd-vae-ft-mse/``, else the single file is
    downloaded from ``stabilityai/sd-vae-ft-mse-original`` (checksum verified). Returns a file or a folder for
    `latentsync.vae.load_vae`."""
    root = Path(models_root).expanduser()
    for name in VAE_SINGLE_FILES:
        if (root / "vae" / name).is_file():
            return root / "vae" / name
    folder = root / VAE_FOLDER
    if all((folder / f).is_file() for f in VAE_FOLDER_FILES):
        return folder
    return locate_file(root, VAE_FILE, download=download, endpoint=endpoint, no_download_reason=no_download_reason)


def _insightface_error(folder: Path, reason: str) -> ModelNotFoundError:
    target = folder / "models" / INSIGHTFACE_PACK
    return ModelNotFoundError(
        f"InsightFace {INSIGHTFACE_PACK} pack not found: {', '.join(INSIGHTFACE_FILES)} in {target}\n"
        f"  source: insightface model zoo, {INSIGHTFACE_PACK}.zip "
        "(https://github.com/deepinsight/insightface/releases, fetched by insightface itself)\n"
        f"  put it in: {target}{os.sep} (unzip {INSIGHTFACE_PACK}.zip there)\n"
        f"  reason: {reason}",
        reason,
    )


def locate_insightface(models_root: str | Path, download: bool = True, folder: str | Path | None = None) -> Path:
    """The ``insightface/models/buffalo_l`` folder with the detector and 106-landmark models. ``folder``: the
    insightface folder to use instead of ``<models_root>/insightface`` (a ComfyUI extra_model_paths entry).

    Missing files are fetched with insightface's own model-zoo download into a private staging folder, then moved
    in (files already present are kept as they are); the staging folder is removed afterwards.
    """
    folder = Path(folder).expanduser() if folder is not None else Path(models_root).expanduser() / "insightface"
    pack = folder / "models" / INSIGHTFACE_PACK
    missing = [f for f in INSIGHTFACE_FILES if not (pack / f).is_file()]
    if not missing:
        return pack
    if not download:
        raise _insightface_error(folder, f"missing {', '.join(missing)}; automatic download is off")
    if (reason := offline_reason()) is not None:
        raise _insightface_error(folder, f"missing {', '.join(missing)}; {reason}")
    try:
        from insightface.utils import storage
    except ImportError as exc:
        raise _insightface_error(folder, missing_package_message("insightface", "downloading buffalo_l")) from exc

    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{INSIGHTFACE_PACK}-download-", dir=folder))
    try:
        try:
            fetched = Path(storage.ensure_available("models", INSIGHTFACE_PACK, root=str(staging)))
        except zipfile.BadZipFile as exc:
            raise _insightface_error(folder, f"corrupt download ({INSIGHTFACE_PACK}.zip is not a valid zip): {exc}") from exc
        except (OSError, RuntimeError, ValueError) as exc:  # requests errors are OSErrors; insightface raises RuntimeError
            raise _insightface_error(folder, f"download failed: {type(exc).__name__}: {exc}") from exc
        found = {p.name: p for p in fetched.rglob("*.onnx")}
        absent = [f for f in INSIGHTFACE_FILES if f not in found]
        if absent:
            raise _insightface_error(folder, f"the downloaded {INSIGHTFACE_PACK}.zip lacks {', '.join(absent)}")
        pack.mkdir(parents=True, exist_ok=True)
        for name, src in found.items():
            if not (pack / name).exists():
                shutil.move(str(src), str(pack / name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # our own staging folder only
    return pack


def is_tiny_set(models_root: str | Path) -> bool:
    """True when ``models_root`` holds a random-weight set written by ``latentsync.tools.make_tiny``."""
    return (Path(models_root).expanduser() / TINY_MARKER).is_file()


def locate_model_set(
    models_root: str | Path,
    version: str = "1.5",
    download: bool = True,
    include_insightface: bool = True,
    mask_url: str | None = None,
    endpoint: str | None = None,
) -> ModelSet:
    """Find (or download) every file for LatentSync ``version`` under ``models_root``.

    A tiny set (marker file present) is never completed with downloads: mixing random and real weights would be
    silently wrong, so a missing file there is an error. Its InsightFace folder may be absent (None).
    """
    _check_version(version)
    root = Path(models_root).expanduser()
    if not root.is_dir():
        raise ModelNotFoundError(f"models folder not found: {root} (expected a ComfyUI models/ folder)")
    tiny = is_tiny_set(root)
    allow = download and not tiny
    if tiny:
        why = f"this is a tiny random-weight set ({TINY_MARKER} present); it is never completed with downloads"
    else:
        why = "automatic download is off"
    unet = locate_file(root, unet_file(version), download=allow, endpoint=endpoint, no_download_reason=why)
    config = unet.parent / UNET_CONFIG_NAME
    whisper = locate_file(root, WHISPER_FILE, download=allow, endpoint=endpoint, no_download_reason=why)
    vae = locate_vae(root, download=allow, endpoint=endpoint, no_download_reason=why)
    mask = locate_file(root, MASK_FILE, download=allow, url=mask_url, no_download_reason=why)
    insightface_dir = None
    if include_insightface:
        pack = root / "insightface" / "models" / INSIGHTFACE_PACK
        if not tiny or all((pack / f).is_file() for f in INSIGHTFACE_FILES):
            insightface_dir = locate_insightface(root, download=allow)
    return ModelSet(
        version=version,
        unet=unet,
        unet_config=config if config.is_file() else None,
        whisper=whisper,
        vae=vae,
        mask=mask,
        insightface_dir=insightface_dir,
        is_tiny=tiny,
    )


# ---------------------------------------------------------------------------------------------------------------
# Training-only networks (frozen supervisors of `training/`); never needed for inference.

AUXILIARY_DIR = "latentsync/auxiliary"
STABLE_SYNCNET_FILE = ModelFile(
    name="StableSyncNet (syncnet_16_pixel_attn, training sync loss)",
    relpath="latentsync/auxiliary/stable_syncnet.pt",
    repo_id="ByteDance/LatentSync-1.6",
    repo_file="stable_syncnet.pt",
)
VIDEOMAE_FILE = ModelFile(
    name="VideoMAE-v2 ViT-g/14 (TREPA loss)",
    relpath="latentsync/auxiliary/vit_g_hybrid_pt_1200e_ssv2_ft.pth",
    repo_id="ByteDance/LatentSync-1.5",
    repo_file="auxiliary/vit_g_hybrid_pt_1200e_ssv2_ft.pth",
)
VGG16_FILE = ModelFile(  # LPIPS' backbone; torchvision's file (lpips ships only its linear heads)
    name="VGG16 ImageNet weights (LPIPS backbone)",
    relpath="latentsync/auxiliary/vgg16-397923af.pth",
    url="https://download.pytorch.org/models/vgg16-397923af.pth",
)
TRAINING_FILES = {"stable_syncnet": STABLE_SYNCNET_FILE, "videomae": VIDEOMAE_FILE, "vgg16": VGG16_FILE}


def locate_training_file(models_root: str | Path, which: str, download: bool = True) -> Path:
    """Path of a frozen training network (``stable_syncnet``, ``videomae``, ``vgg16``) under ``models_root``,
    downloaded when missing and allowed; otherwise `ModelNotFoundError` naming the file, its source and folder."""
    if which not in TRAINING_FILES:
        raise ValueError(f"unknown training file {which!r}; choose one of {', '.join(TRAINING_FILES)}")
    return locate_file(models_root, TRAINING_FILES[which], download=download)


def locate_syncnet_v2(models_root: str | Path, download: bool = True, endpoint: str | None = None) -> Path:
    """``latentsync/auxiliary/syncnet_v2.model`` under ``models_root``, downloaded when missing and allowed (never
    into a tiny random-weight set, whose own random SyncNet-v2 is written by make_tiny)."""
    root = Path(models_root).expanduser()
    tiny = is_tiny_set(root)
    why = (f"this is a tiny random-weight set ({TINY_MARKER} present); it is never completed with downloads" if tiny
           else "automatic download is off")
    return locate_file(root, SYNCNET_V2_FILE, download=download and not tiny, endpoint=endpoint,
                       no_download_reason=why)


class ModelLoadError(RuntimeError):
    """A model file exists but cannot be loaded: damaged, truncated, or not the model it should be."""


def model_load_error(what: str, path: str | Path, exc: BaseException) -> ModelLoadError:
    """One message naming the file and what to do about it."""
    detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return ModelLoadError(
        f"cannot load the {what} from {path}: the file is damaged, incomplete or not a {what} "
        f"({type(exc).__name__}: {detail}). Delete it and download it again (python -m "
        "latentsync.tools.fetch_models --models DIR, or a loader node with download_missing on).")
