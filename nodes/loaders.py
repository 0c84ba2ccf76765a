"""Loader nodes: the LatentSync U-Net (+ mouth mask), Whisper, the face analyzer, and a fallback VAE loader for a
diffusers folder (ComfyUI's own Load VAE is the normal way to get the VAE).

Files live in ComfyUI's model folders: `models/latentsync/` (registered with `folder_paths`, so extra_model_paths
work) and `models/insightface/` (shared with other packs). Official files that are missing are downloaded on demand
through `latentsync.hub` into the first latentsync model folder (the first one extra_model_paths.yaml configures,
else models/latentsync), with progress on the node and Cancel, unless switched off.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import torch
from comfy_api.latest import io

from . import runtime
from .runtime import LOG, MODEL_CACHE
from .types import FaceAnalyzer, LatentSyncModel, LoadedFaceAnalyzer, LoadedLatentSync, LoadedWhisper, WhisperModel

OFFICIAL_UNETS = {"v1.5/latentsync_unet.pt": "1.5", "v1.6/latentsync_unet.pt": "1.6"}
OFFICIAL_WHISPER = "whisper/tiny.pt"
MASK_NAME = "mask.png"
VERSION_CHOICES = ["auto", "1.5", "1.6"]
DTYPE_CHOICES = ["auto", "fp16", "bf16", "fp32"]
FACE_BACKENDS = ["auto", "insightface", "offline"]
LORA_FOLDER = "loras/"  # models/latentsync/loras/: LoRA files of the U-Net (training.train_unet, lora.rank > 0)
NO_LORA = "none"
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def _resolution(version: str) -> int:
    from ..latentsync.config import VERSIONS  # noqa: PLC0415

    entry = VERSIONS[version]
    return int(entry["resolution"] if isinstance(entry, dict) else entry)


# ---------------------------------------------------------------------------------------------------------------
# file lists (what the combos offer)


def unet_choices() -> list[str]:
    """Every U-Net file under models/latentsync (not the Whisper ones), plus the official names (downloadable)."""
    found = [n for n in runtime.list_files(runtime.LATENTSYNC_FOLDER)
             if not n.startswith(("whisper/", "auxiliary/", LORA_FOLDER)) and "syncnet" not in n.lower()]  # SyncNets and the frozen
    # training networks (latentsync/auxiliary/) are not U-Nets
    return list(OFFICIAL_UNETS) + sorted(set(found) - set(OFFICIAL_UNETS))


def lora_choices() -> list[str]:
    """"none" and the LoRA files under models/latentsync/loras/."""
    return [NO_LORA] + [n for n in runtime.list_files(runtime.LATENTSYNC_FOLDER, (".safetensors",))
                        if n.startswith(LORA_FOLDER)]


def whisper_choices() -> list[str]:
    found = [n for n in runtime.list_files(runtime.LATENTSYNC_FOLDER, (".pt",)) if n.startswith("whisper/")]
    return [OFFICIAL_WHISPER] + sorted(set(found) - {OFFICIAL_WHISPER})


def diffusers_vae_choices() -> list[str]:
    """Sub-folders of models/vae (and models/diffusers) that hold a diffusers AutoencoderKL."""
    names = set()
    for folder_name in ("vae", "diffusers"):
        files = set(runtime.all_files(folder_name))
        for root, rel in files:
            folder, _, name = rel.rpartition("/")
            if folder and name in DIFFUSERS_WEIGHTS and (root, f"{folder}/config.json") in files:
                names.add(folder)
    return sorted(names)


# ---------------------------------------------------------------------------------------------------------------
# locating files


def _models_root_of(path: str) -> Path:
    """The models root holding `.../latentsync/<file>` (the parent of the latentsync folder that contains it)."""
    p = Path(path).resolve()
    for root in runtime.folder_roots(runtime.LATENTSYNC_FOLDER):
        if runtime.inside(root, str(p)) or runtime.inside(os.path.realpath(root), str(p)):
            return Path(root).parent
    return Path(runtime.default_models_root())


def _is_tiny(models_root: Path) -> bool:
    from ..latentsync import hub  # noqa: PLC0415

    return hub.is_tiny_set(models_root)


def download_into(official, download: bool) -> Path:
    """An official latentsync file that is missing, downloaded (when allowed) into the first latentsync model
    folder, with the node's progress bar and Cancel (a cancelled download leaves only a resumable `.part` file)."""
    from ..latentsync import hub  # noqa: PLC0415

    folder = Path(runtime.download_folder(runtime.LATENTSYNC_FOLDER))
    if _is_tiny(folder.parent) or _is_tiny(Path(runtime.default_models_root())):
        download = False  # never complete a tiny random set with real files
    file = hub.in_folder(official, runtime.LATENTSYNC_FOLDER)
    LOG.info("LatentSync: %s is missing; %s", file.relpath,
             f"downloading it into {folder}" if download else "download is off")
    return hub.locate_file(folder, file, download=download, progress=runtime.DownloadProgress(),
                           no_download_reason="download_missing is off in the loader node")


def locate_latentsync_file(name: str, official, download: bool) -> str:
    """Full path of `name` in the latentsync model folders; an official file that is missing is downloaded."""
    path = runtime.find_in_folder(runtime.LATENTSYNC_FOLDER, name)
    if path is not None:
        return path
    folders = ", ".join(runtime.folder_roots(runtime.LATENTSYNC_FOLDER))
    if official is None:
        raise FileNotFoundError(f"LatentSync: {name!r} not found in the latentsync model folders ({folders})")
    return str(download_into(official, download))


def locate_mask(models_root: Path, resolution: int, download: bool) -> torch.Tensor:
    from ..latentsync import hub  # noqa: PLC0415
    from ..latentsync.face.mask import load_mask  # noqa: PLC0415

    candidate = models_root / "latentsync" / MASK_NAME
    path = candidate if candidate.is_file() else runtime.find_in_folder(runtime.LATENTSYNC_FOLDER, MASK_NAME)
    if path is None:
        path = download_into(hub.MASK_FILE, download)
    return load_mask(path, resolution)


def read_unet_config(path: str) -> dict | None:
    """Our own U-Net config beside the weights (tiny or custom sets); None: the architecture is read from shapes."""
    from ..latentsync import hub  # noqa: PLC0415

    cfg = Path(path).with_name(hub.UNET_CONFIG_NAME)
    return hub.read_unet_config(cfg) if cfg.is_file() else None


class VersionChoice(NamedTuple):
    version: str
    how: str  # shown on the loader node
    assumed: bool = False  # 'auto' found no version in the name


def resolve_version(choice: str, name: str) -> VersionChoice:
    """'auto': from the file's folder name (v1.5/..., v1.6/...) or file name, else 1.5 with a warning; otherwise the
    choice."""
    if choice != "auto":
        if choice not in VERSION_CHOICES:
            raise ValueError(f"unknown version {choice!r}")
        return VersionChoice(choice, "chosen in the loader")
    parts = [p.lower() for p in name.replace("\\", "/").split("/")]
    for version in ("1.6", "1.5"):
        folder = next((p for p in parts[:-1]
                       if p in (f"v{version}", version, f"latentsync-{version}", f"latentsync_{version}")), None)
        if folder is not None:
            return VersionChoice(version, f"auto: from the folder name {folder}/")
        if version in parts[-1]:
            return VersionChoice(version, f"auto: from the file name {parts[-1]}")
    LOG.warning("LatentSync: cannot tell the version of %s from its name; assuming 1.5 (choose it in the loader)",
                name)
    return VersionChoice("1.5", "auto: assumed, the name has no version; choose 1.5 or 1.6 in the loader if this "
                                "is wrong", assumed=True)


# ---------------------------------------------------------------------------------------------------------------
# loading


def locate_lora(name: str, strength: float) -> list[tuple[str, float]]:
    """[(path, strength)] of the chosen LoRA file, [] for none."""
    if name in (None, "", NO_LORA):
        return []
    path = runtime.find_in_folder(runtime.LATENTSYNC_FOLDER, name)
    if path is None:
        folders = ", ".join(runtime.folder_roots(runtime.LATENTSYNC_FOLDER))
        raise FileNotFoundError(f"LatentSync: LoRA {name!r} not found in the latentsync model folders ({folders})")
    return [(path, float(strength))]


def load_latentsync(checkpoint: str, version: str = "auto", dtype: str = "auto",
                    download_missing: bool = True, lora: str = NO_LORA,
                    lora_strength: float = 1.0) -> LoadedLatentSync:
    from ..latentsync.models.checkpoint import load_unet  # noqa: PLC0415

    runtime.check_relative(checkpoint)
    official_version = OFFICIAL_UNETS.get(checkpoint)
    official = None
    if official_version is not None:
        from ..latentsync import hub  # noqa: PLC0415

        official = hub.unet_file(official_version)
    path = locate_latentsync_file(checkpoint, official, download_missing)
    ver = resolve_version(version, checkpoint).version
    resolution = _resolution(ver)
    device = runtime.torch_device()
    torch_dtype = runtime.pick_dtype(dtype, device)
    loras = locate_lora(lora, lora_strength)
    key = ("LatentSync U-Net", runtime.ModelCache.stamp(path), ver, str(torch_dtype),
           tuple((runtime.ModelCache.stamp(p), s) for p, s in loras))

    def load() -> LoadedLatentSync:
        models_root = _models_root_of(path)
        config = read_unet_config(path)
        LOG.info("LatentSync: loading U-Net %s (version %s, %s)%s", path, ver, torch_dtype,
                 "".join(f" + LoRA {p} x {s:g}" for p, s in loras))
        unet = load_unet(path, config=config, device=runtime.offload_device(), dtype=torch_dtype,
                         loras=loras, ops=runtime.comfy_layers(torch_dtype, device)).eval()
        unet.requires_grad_(False)
        mask = locate_mask(models_root, resolution, download_missing)
        tiny = _is_tiny(models_root)
        if tiny:
            LOG.warning("LatentSync: %s is a TINY RANDOM model set: the pipeline runs, the mouth is noise", models_root)
        patcher = runtime.make_patcher(runtime.UNetHolder(unet))
        return LoadedLatentSync(patcher=patcher, version=ver, resolution=resolution, mask=mask,
                                dtype=torch_dtype, path=path, is_tiny=tiny)

    return MODEL_CACHE.get_or_load(key, load)


def load_whisper(name: str, download_missing: bool = True) -> LoadedWhisper:
    from ..latentsync.audio.whisper_encoder import WhisperAudioEncoder  # noqa: PLC0415

    runtime.check_relative(name)
    official = None
    if name == OFFICIAL_WHISPER:
        from ..latentsync import hub  # noqa: PLC0415

        official = hub.WHISPER_FILE
    path = locate_latentsync_file(name, official, download_missing)
    device = runtime.torch_device()
    # fp16 on GPUs as the official pipeline, fp32 on the CPU
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    key = ("Whisper", runtime.ModelCache.stamp(path), str(dtype))

    def load() -> LoadedWhisper:
        LOG.info("LatentSync: loading Whisper %s", path)
        encoder = WhisperAudioEncoder.from_file(path, device=runtime.offload_device(), dtype=dtype)
        return LoadedWhisper(patcher=runtime.make_patcher(runtime.WhisperHolder(encoder)), path=path)

    return MODEL_CACHE.get_or_load(key, load)


def choose_face_backend(backend: str, download: bool):
    """`latentsync.face.backend_choice.choose_face_backend` over ComfyUI's insightface folders (models/insightface and
    any extra_model_paths entry); a download goes to the first of them (the first one extra_model_paths.yaml
    configures, else models/insightface)."""
    from ..latentsync import hub  # noqa: PLC0415
    from ..latentsync.face.backend_choice import choose_face_backend as choose  # noqa: PLC0415

    search = [Path(root) / "models" / hub.INSIGHTFACE_PACK for root in runtime.folder_roots(runtime.INSIGHTFACE_FOLDER)]
    return choose(backend, runtime.default_models_root(), download=download, search=search,
                  no_download_reason="download_missing is off in the loader node",
                  folder=runtime.download_folder(runtime.INSIGHTFACE_FOLDER))


def load_face_analyzer(backend: str, download_missing: bool = True) -> LoadedFaceAnalyzer:
    from ..latentsync.face.detector import (  # noqa: PLC0415
        TORCH_OFFLINE_DEVICES,
        create_face_detector,
        describe_face_detection,
    )

    if backend not in FACE_BACKENDS:
        raise ValueError(f"unknown face backend {backend!r}; choose one of {FACE_BACKENDS}")
    choice = choose_face_backend(backend, download_missing)
    (LOG.warning if choice.requested == "auto" and choice.backend == "offline" else LOG.info)(
        "LatentSync: face analyzer %s", choice.describe())
    torch_device = runtime.torch_device()
    device = str(torch_device) if torch_device.type in ("cuda", *TORCH_OFFLINE_DEVICES) else "cpu"
    LOG.info("LatentSync: %s", describe_face_detection(choice.backend, device))
    key = ("face analyzer", choice.backend, str(choice.models_dir), device)

    def load() -> LoadedFaceAnalyzer:
        detector = create_face_detector(choice.backend, models_dir=choice.models_dir, device=device)
        return LoadedFaceAnalyzer(detector=detector, backend=choice.backend)

    analyzer = MODEL_CACHE.get_or_load(key, load)
    return replace(analyzer, requested=choice.requested, reason=choice.reason)


def diffusers_to_ldm_config(config: dict) -> dict:
    """A diffusers AutoencoderKL config.json -> ComfyUI's (LDM) AutoencoderKL params."""
    widths = [int(c) for c in config.get("block_out_channels", [128, 256, 512, 512])]
    if int(config.get("norm_num_groups", 32)) != 32 or any(w % 32 for w in widths):
        raise ValueError("ComfyUI's VAE needs norm_num_groups 32 and block widths that are multiples of 32; "
                         f"this VAE has {config.get('norm_num_groups')} groups and widths {widths}")
    ch = widths[0]
    if any(w % ch for w in widths):
        raise ValueError(f"block widths {widths} are not multiples of the first one")
    latent = int(config.get("latent_channels", 4))
    ddconfig = {
        "double_z": True, "z_channels": latent, "resolution": int(config.get("sample_size", 256)),
        "in_channels": int(config.get("in_channels", 3)), "out_ch": int(config.get("out_channels", 3)),
        "ch": ch, "ch_mult": [w // ch for w in widths], "num_res_blocks": int(config.get("layers_per_block", 2)),
        "attn_resolutions": [], "dropout": 0.0,
    }
    return {"params": {"ddconfig": ddconfig, "embed_dim": latent}}


def load_diffusers_vae(name: str):
    """A diffusers VAE folder as ComfyUI's own `VAE` object (keys converted by ComfyUI, widths from config.json)."""
    import comfy.sd  # noqa: PLC0415
    import comfy.utils  # noqa: PLC0415

    runtime.check_relative(name)
    folder = None
    for folder_name in ("vae", "diffusers"):
        folder = runtime.find_in_folder(folder_name, name, want_dir=True)
        if folder is not None:
            break
    if folder is None:
        raise FileNotFoundError(f"LatentSync: VAE folder {name!r} not found in models/vae or models/diffusers")
    weights = next((os.path.join(folder, f) for f in DIFFUSERS_WEIGHTS if os.path.isfile(os.path.join(folder, f))),
                   None)
    if weights is None:
        raise FileNotFoundError(f"LatentSync: {folder} has no diffusion_pytorch_model.safetensors/.bin")
    key = ("VAE", runtime.ModelCache.stamp(weights))

    def load():
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
        sd = comfy.utils.load_torch_file(weights, safe_load=True)
        LOG.info("LatentSync: loading diffusers VAE %s", folder)
        return comfy.sd.VAE(sd=sd, config=diffusers_to_ldm_config(config))

    return MODEL_CACHE.get_or_load(key, load)


# ---------------------------------------------------------------------------------------------------------------
# nodes


class LatentSyncModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        choices = unet_choices()
        return io.Schema(
            node_id="LatentSyncModelLoader",
            display_name="Load LatentSync Model",
            category="LatentSync",
            description="Loads the LatentSync 3-D U-Net and the mouth mask from models/latentsync. "
                        "Official files that are missing are downloaded from Hugging Face.",
            inputs=[
                io.Combo.Input("checkpoint", options=choices, default=choices[0],
                               tooltip="U-Net file in models/latentsync. v1.5 (256 px faces) and v1.6 (512 px) are "
                                       "downloaded when missing."),
                io.Combo.Input("version", options=VERSION_CHOICES, default="auto",
                               tooltip="LatentSync version: auto reads it from the folder name (v1.5/, v1.6/). "
                                       "It sets the face resolution (1.5: 256, 1.6: 512)."),
                io.Combo.Input("dtype", options=DTYPE_CHOICES, default="auto",
                               tooltip="Weight precision. auto: fp16 on most GPUs, fp32 on the CPU."),
                io.Boolean.Input("download_missing", default=True,
                                 tooltip="Download the official file (and mask.png) when it is not in the models "
                                         "folder."),
                io.Combo.Input("lora", options=lora_choices(), default=NO_LORA, optional=True,
                               tooltip="A LoRA of the U-Net from models/latentsync/loras/ (a one-person fine-tune "
                                       "trained with training.train_unet, lora.rank > 0), merged into the weights of "
                                       "the checkpoint it was trained on. none: the checkpoint as it is."),
                io.Float.Input("lora_strength", default=1.0, min=-2.0, max=2.0, step=0.05, optional=True,
                               tooltip="How much of the LoRA is merged: 1 as trained, 0 the plain checkpoint, "
                                       "between them a blend."),
            ],
            outputs=[LatentSyncModel.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, checkpoint, version, dtype, download_missing, lora=NO_LORA,
                lora_strength=1.0) -> io.NodeOutput:
        runtime.check_relative(checkpoint)
        chosen = resolve_version(version, checkpoint)
        model = load_latentsync(checkpoint, chosen.version, dtype, download_missing, lora, lora_strength)
        ui = {"latentsync_model": [{"version": model.version, "resolution": model.resolution, "how": chosen.how,
                                    "assumed": chosen.assumed, "tiny": model.is_tiny}]}
        return io.NodeOutput(model, ui=ui)


class LatentSyncWhisperLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        choices = whisper_choices()
        return io.Schema(
            node_id="LatentSyncWhisperLoader",
            display_name="Load LatentSync Whisper",
            category="LatentSync",
            description="Loads the Whisper tiny encoder (models/latentsync/whisper/tiny.pt) that LatentSync uses "
                        "for its audio features.",
            inputs=[
                io.Combo.Input("whisper", options=choices, default=choices[0],
                               tooltip="OpenAI Whisper checkpoint under models/latentsync/whisper/ (tiny.pt is "
                                       "downloaded when missing)."),
                io.Boolean.Input("download_missing", default=True,
                                 tooltip="Download whisper/tiny.pt from the LatentSync repository when missing."),
            ],
            outputs=[WhisperModel.Output(display_name="whisper")],
        )

    @classmethod
    def execute(cls, whisper, download_missing) -> io.NodeOutput:
        return io.NodeOutput(load_whisper(whisper, download_missing))


class LatentSyncFaceAnalyzerLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncFaceAnalyzerLoader",
            display_name="Load LatentSync Face Analyzer",
            category="LatentSync",
            description="Face detector with landmarks used to align faces: InsightFace buffalo_l (official, from "
                        "models/insightface) or an offline RetinaFace that needs no download; auto picks InsightFace "
                        "when buffalo_l is there or can be downloaded and shows its choice on the node.",
            inputs=[
                io.Combo.Input("backend", options=FACE_BACKENDS, default="auto",
                               tooltip="auto: insightface when buffalo_l is present or can be downloaded, else offline "
                                       "(the choice and the reason show on the node). insightface: the official "
                                       "detector (models/insightface/models/buffalo_l, shared with other packs; "
                                       "non-commercial licence). offline: RetinaFace shipped in a pip wheel (MIT), "
                                       "approximate landmarks."),
                io.Boolean.Input("download_missing", default=True,
                                 tooltip="Download buffalo_l with insightface's own downloader when missing."),
            ],
            outputs=[FaceAnalyzer.Output(display_name="face_analyzer")],
        )

    @classmethod
    def execute(cls, backend, download_missing) -> io.NodeOutput:
        analyzer = load_face_analyzer(backend, download_missing)
        ui = {"latentsync_face_backend": [{"requested": analyzer.requested, "backend": analyzer.backend,
                                           "reason": analyzer.reason}]}
        return io.NodeOutput(analyzer, ui=ui)


class LatentSyncVAELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncVAELoader",
            display_name="Load VAE (diffusers folder)",
            category="LatentSync",
            description="Fallback for a VAE stored as a diffusers folder (config.json + diffusion_pytorch_model). "
                        "Use ComfyUI's Load VAE for single files such as vae-ft-mse-840000-ema-pruned.safetensors.",
            inputs=[
                io.Combo.Input("vae_folder", options=diffusers_vae_choices(),
                               tooltip="A sub-folder of models/vae or models/diffusers holding a diffusers "
                                       "AutoencoderKL (e.g. sd-vae-ft-mse)."),
            ],
            outputs=[io.Vae.Output(display_name="vae")],
        )

    @classmethod
    def execute(cls, vae_folder) -> io.NodeOutput:
        return io.NodeOutput(load_diffusers_vae(vae_folder))


NODES = [LatentSyncModelLoader, LatentSyncWhisperLoader, LatentSyncFaceAnalyzerLoader, LatentSyncVAELoader]
