"""ComfyUI runtime adapters: model folders and safe paths, devices and offloading (ModelPatcher), progress + Cancel,
ComfyUI's VAE as the library's encode/decode codec, and the loaders' small model cache.

Everything ComfyUI-specific the library needs goes through here; nothing outside the pack's own state is changed
except adding our model folders to `folder_paths` (added, never replacing what the user configured).
"""
from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import folder_paths
import torch

LOG = logging.getLogger("LatentSync")
SCALING_FACTOR = 0.18215  # latentsync.vae.SCALING_FACTOR (not imported: that module pulls in diffusers)

LATENTSYNC_FOLDER = "latentsync"
INSIGHTFACE_FOLDER = "insightface"
MODEL_EXTENSIONS = (".pt", ".pth", ".safetensors", ".ckpt", ".bin")


# ---------------------------------------------------------------------------------------------------------------
# model folders and paths


def register_model_folders() -> None:
    """Add `models/latentsync` and `models/insightface` to ComfyUI's model folders (idempotent, additive)."""
    for name in (LATENTSYNC_FOLDER, INSIGHTFACE_FOLDER):
        folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name))


def folder_roots(folder_name: str) -> list[str]:
    try:
        return folder_paths.get_folder_paths(folder_name)
    except KeyError:
        return []


def default_models_root() -> str:
    """ComfyUI's models folder (where the tiny-set marker of a models root is looked for)."""
    return folder_paths.models_dir


def download_folder(folder_name: str) -> str:
    """Where a missing file of this model type is downloaded: the first folder registered for it, i.e. the first
    one extra_model_paths.yaml configures (ComfyUI reads that file before loading custom nodes, and ours is added
    after it), else ComfyUI's own models/<folder_name>."""
    roots = folder_roots(folder_name)
    return roots[0] if roots else os.path.join(folder_paths.models_dir, folder_name)


def check_relative(name: str) -> str:
    """Validate a file name chosen in a workflow: relative, no '..', no drive, normalised with '/'."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("empty file name")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or os.path.isabs(name) or (len(norm) > 1 and norm[1] == ":"):
        raise ValueError(f"file name must be relative to a models folder, got {name!r}")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise ValueError(f"file name must not leave its models folder: {name!r}")
    return "/".join(parts)


def inside(root: str, path: str) -> bool:
    """Lexically inside `root` (symlinked model files are allowed, '..' escapes are not)."""
    root_abs = os.path.abspath(root)
    path_abs = os.path.abspath(path)
    return os.path.commonpath([root_abs, path_abs]) == root_abs


def find_in_folder(folder_name: str, name: str, want_dir: bool = False) -> str | None:
    """Full path of `name` in one of the folders registered for `folder_name`, or None (never outside them)."""
    rel = check_relative(name)
    for root in folder_roots(folder_name):
        candidate = os.path.join(root, *rel.split("/"))
        if not inside(root, candidate):
            continue
        if (os.path.isdir(candidate) if want_dir else os.path.isfile(candidate)):
            return candidate
    return None


def list_files(folder_name: str, extensions: Iterable[str] = MODEL_EXTENSIONS) -> list[str]:
    """Relative names (with '/') of the files under every folder registered for `folder_name`."""
    exts = tuple(e.lower() for e in extensions)
    try:
        names = folder_paths.get_filename_list(folder_name)
    except KeyError:
        return []
    return sorted({n.replace("\\", "/") for n in names if n.lower().endswith(exts)})


_LISTINGS: dict[str, tuple[list[str], dict[str, float]]] = {}  # root -> (relative files, directory mtimes)


def _listing_current(root: str, dirs: dict[str, float]) -> bool:
    if not dirs:  # the root did not exist when listed
        return not os.path.isdir(root)
    try:
        return all(os.path.getmtime(d) == mtime for d, mtime in dirs.items())
    except OSError:
        return False


def all_files(folder_name: str) -> list[tuple[str, str]]:
    """(root, relative path with '/') of every file under every folder registered for `folder_name`, hidden folders
    left out. Each root is walked once and its listing kept until one of its directories changes (one stat per
    directory, as ComfyUI checks its own file lists), so building a node's options on every /object_info is cheap."""
    out = []
    for root in folder_roots(folder_name):
        listing = _LISTINGS.get(root)
        if listing is None or not _listing_current(root, listing[1]):
            listing = folder_paths.recursive_search(root, excluded_dir_names=[".git"])
            _LISTINGS[root] = listing
        for rel in listing[0]:
            rel = rel.replace(os.sep, "/")
            if not any(part.startswith(".") for part in rel.split("/")[:-1]):
                out.append((root, rel))
    return out


# ---------------------------------------------------------------------------------------------------------------
# devices, dtypes, ModelPatcher


def torch_device() -> torch.device:
    return mm.get_torch_device()


def offload_device() -> torch.device:
    return mm.unet_offload_device()


DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def pick_dtype(choice: str, device: torch.device) -> torch.dtype:
    """auto: what ComfyUI would pick for a diffusion model on `device` (fp16 on most GPUs, fp32 on the CPU)."""
    if choice == "auto":
        return mm.unet_dtype(device=device, supported_dtypes=[torch.float16, torch.bfloat16, torch.float32])
    if choice not in DTYPES:
        raise ValueError(f"unknown dtype {choice!r}; choose auto, fp16, bf16 or fp32")
    from ..latentsync.precision import safe_dtype  # noqa: PLC0415

    device = torch.device(device)
    return safe_dtype(DTYPES[choice], "cpu" if mm.is_device_cpu(device) else device,
                      log=lambda message: LOG.warning("LatentSync: %s", message.removeprefix("WARNING: ")))


class UNetHolder(torch.nn.Module):
    """What the ModelPatcher manages: a plain module (the U-Net's own `device` is a read-only property)."""

    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        self.diffusion_model = unet


class WhisperHolder(torch.nn.Module):
    """ModelPatcher target for the Whisper encoder; `encoder` is the library's `WhisperAudioEncoder`."""

    def __init__(self, encoder):
        super().__init__()
        self.audio_encoder = encoder.encoder  # the torch module (registered, so the patcher moves it)
        object.__setattr__(self, "encoder", encoder)  # plain attribute: the library wrapper


def make_patcher(module: torch.nn.Module) -> comfy.model_patcher.ModelPatcher:
    return comfy.model_patcher.ModelPatcher(
        module, load_device=torch_device(), offload_device=offload_device(), size=mm.module_size(module)
    )


def load_to_device(patcher, memory_required: int = 0, full: bool = True) -> torch.device:
    """Ask ComfyUI's memory manager to put the model on its device (it unloads other models as needed).

    `full=False` (the U-Net, built from `comfy.ops` layers): ComfyUI may load it partially and stream the rest of
    its weights from the CPU layer by layer (small GPUs, `--lowvram`), keeping `memory_required` bytes free for the
    activations. `full=True` (models made of plain torch modules, which cannot run split): all of it, buffers
    included."""
    mm.load_models_gpu([patcher], memory_required=memory_required, force_full_load=full)
    device = patcher.load_device
    if full:
        patcher.model.to(device)  # no-op for weights already moved; brings buffers along
    return device


def comfy_layers(dtype: torch.dtype, device: torch.device):
    """The layer classes ComfyUI builds its own diffusion models from, for weights stored in `dtype`: they can
    stay on the CPU and be cast to the GPU per call when ComfyUI loads the model partially."""
    import comfy.ops  # noqa: PLC0415

    return comfy.ops.pick_operations(dtype, dtype, load_device=device)


# ---------------------------------------------------------------------------------------------------------------
# progress and Cancel


def check_cancel() -> None:
    """Raise ComfyUI's InterruptProcessingException when the user pressed Cancel (POST /interrupt)."""
    mm.throw_exception_if_processing_interrupted()


class Progress:
    """A `progress(done, total)` callable for the library: updates the node's progress bar and checks Cancel."""

    def __init__(self, total: int = 1, node_id: str | None = None):
        self.bar = comfy.utils.ProgressBar(max(1, int(total)), node_id=node_id)
        self.total = max(1, int(total))
        self.done = 0

    def __call__(self, done: int, total: int | None = None) -> None:
        check_cancel()
        if total is not None:
            self.total = max(1, int(total))
        self.done = min(int(done), self.total)
        self.bar.update_absolute(self.done, self.total)

    def advance(self, n: int = 1) -> None:
        self(self.done + n)

    def sub(self, start: int, span: int) -> Callable[[int, int], None]:
        """A callback mapping a sub-task's (i, n) onto [start, start + span] of this bar."""

        def report(i: int, n: int) -> None:
            self(start + (span * i) // max(1, n))

        return report


class DownloadProgress:
    """A download's `progress(bytes so far, total)` for the library: Cancel is checked after every block, and the
    node's progress bar moves in steps of 0.5 % (not one message per megabyte)."""

    STEPS = 200

    def __init__(self, node_id: str | None = None):
        self.bar = comfy.utils.ProgressBar(self.STEPS, node_id=node_id)
        self.shown = -1

    def __call__(self, done: int, total: int) -> None:
        check_cancel()
        step = self.STEPS * done // total if total > 0 else 0
        if step != self.shown:
            self.shown = step
            self.bar.update_absolute(min(step, self.STEPS), self.STEPS)


# ---------------------------------------------------------------------------------------------------------------
# ComfyUI's VAE as the library's codec


class ComfyVAECodec:
    """The library's VAE protocol on top of ComfyUI's `VAE`:

    - `encode(images (N, 3, R, R) in [-1, 1]) -> latents * 0.18215` (ComfyUI: pixels BHWC in [0, 1] -> unscaled
      posterior mode);
    - `decode(scaled latents) -> images (N, 3, R, R) in [-1, 1]` (ComfyUI: unscaled latents -> BHWC in [0, 1]).
    Work is split into chunks with a Cancel check and a progress report after each.
    """

    def __init__(self, vae, chunk: int = 16, on_chunk: Callable[[int, int], None] | None = None):
        if vae is None or not hasattr(vae, "encode") or not hasattr(vae, "decode"):
            raise ValueError("expected a VAE (connect ComfyUI's Load VAE node)")
        latent_channels = getattr(vae, "latent_channels", 4)
        if latent_channels != 4:
            raise ValueError(
                f"this VAE has {latent_channels} latent channels; LatentSync needs the SD 1.x VAE (4 channels), "
                "e.g. vae-ft-mse-840000-ema-pruned.safetensors or taesd"
            )
        self.vae = vae
        self.chunk = max(1, int(chunk))
        self.on_chunk = on_chunk

    def _chunks(self, n: int):
        for start in range(0, n, self.chunk):
            check_cancel()
            yield start, min(n, start + self.chunk)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"encode expects (N, 3, R, R) images, got {tuple(images.shape)}")
        out = []
        for a, b in self._chunks(images.shape[0]):
            pixels = images[a:b].float().add(1.0).div(2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1)
            out.append(self.vae.encode(pixels).float().cpu() * SCALING_FACTOR)
            if self.on_chunk is not None:
                self.on_chunk(b, images.shape[0])
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.ndim != 4:
            raise ValueError(f"decode expects (N, 4, h, w) latents, got {tuple(latents.shape)}")
        out = []
        for a, b in self._chunks(latents.shape[0]):
            pixels = self.vae.decode(latents[a:b].float() / SCALING_FACTOR)
            if pixels.ndim == 5:  # video VAEs return (B, T, H, W, C)
                pixels = pixels.reshape(-1, *pixels.shape[-3:])
            out.append(pixels.float().cpu().permute(0, 3, 1, 2).mul(2.0).sub(1.0))
            if self.on_chunk is not None:
                self.on_chunk(b, latents.shape[0])
        return torch.cat(out)


# ---------------------------------------------------------------------------------------------------------------
# the loaders' cache


class ModelCache:
    """Loaded models by (kind, path, file stamp, options), held weakly: a model stays shared while ComfyUI (its
    output cache or a running graph) still holds it, and is freed with it. No copy is kept alive by the cache."""

    def __init__(self):
        self._items: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._lock = threading.Lock()

    @staticmethod
    def stamp(path: str) -> tuple:
        st = os.stat(path)
        return (os.path.realpath(path), st.st_size, st.st_mtime_ns)

    def get_or_load(self, key: tuple, load: Callable[[], object]):
        with self._lock:
            item = self._items.get(key)
        if item is not None:
            LOG.info("LatentSync: reusing loaded %s", key[0])
            return item
        try:
            item = load()
        except (FileNotFoundError, MemoryError, mm.InterruptProcessingException):
            raise
        except ValueError:  # our loaders' own explanations (a config ComfyUI cannot hold, a wrong mask, ...)
            raise
        except Exception as exc:  # noqa: BLE001 - a file that exists but does not load: one clear message
            from ..latentsync.hub import model_load_error  # noqa: PLC0415

            stamp = key[1] if len(key) > 1 else None
            path = stamp[0] if isinstance(stamp, tuple) and stamp and isinstance(stamp[0], str) else stamp
            raise model_load_error(str(key[0]), path, exc) from exc
        with self._lock:
            self._items[key] = item
        return item

    def __len__(self) -> int:
        return len(self._items)


MODEL_CACHE = ModelCache()


# ---------------------------------------------------------------------------------------------------------------
# models in use


def is_loaded(patcher) -> bool:
    """Whether ComfyUI's memory manager holds the model on its device (wholly or partly)."""
    return any(m is patcher for m in mm.loaded_models())


class ManagedUNet:
    """The U-Net as the library sees it, made safe for ComfyUI's memory manager: before a U-Net call, the model is
    loaded when ComfyUI does not hold it (the first call of a run, or after a VAE or another model made ComfyUI
    unload it), so a run loads it once unless memory forced it out. `device` is where it computes (its weights may
    partly stay on the CPU and stream, see `load_to_device`); `loads` counts the loads this object asked for."""

    def __init__(self, patcher, memory_required: int = 0):
        self.patcher = patcher
        self.memory_required = memory_required
        self.loads = 0

    @property
    def module(self) -> torch.nn.Module:
        return self.patcher.model.diffusion_model

    @property
    def device(self) -> torch.device:
        return torch.device(self.patcher.load_device)

    @property
    def dtype(self) -> torch.dtype:
        return self.module.dtype

    def ensure_loaded(self) -> None:
        if not is_loaded(self.patcher):
            load_to_device(self.patcher, self.memory_required, full=False)
            self.loads += 1

    def parameters(self, recurse: bool = True):
        self.ensure_loaded()
        return self.module.parameters(recurse)

    def __call__(self, *args, **kwargs):
        self.ensure_loaded()
        return self.module(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.patcher.model.diffusion_model, name)


def unet_memory_estimate(resolution: int, frames: int = 16, dtype: torch.dtype = torch.float16,
                         cfg_batch: str = "joint", ff_chunks: int = 1) -> int:
    """Activation memory of one denoising window of the U-Net (guidance on), from the peaks measured by
    `bench.unet_memory` (`latentsync.models.activation_memory`): what ComfyUI keeps free beside the weights."""
    from ..latentsync.models.activation_memory import activation_peak_bytes  # noqa: PLC0415

    return activation_peak_bytes(resolution, frames, dtype, cfg_batch=cfg_batch, ff_chunks=ff_chunks)


def whisper_on_device(loaded) -> object:
    """Load the Whisper encoder to its device and return the library's encoder object, its device in sync."""
    device = load_to_device(loaded.patcher)
    encoder = loaded.encoder
    encoder.device = torch.device(device)
    return encoder


def face_report(has_face: torch.Tensor, what: str = "frames") -> tuple[dict, str | None]:
    """The `ui` payload the web extension shows on the node, and the warning text (None when every frame has one)."""
    has_face = has_face.to(torch.bool).cpu()
    total = int(has_face.numel())
    found = int(has_face.sum())
    missing = (~has_face).nonzero().flatten().tolist()
    warning = None
    if missing:
        shown = ", ".join(str(i) for i in missing[:20]) + (" ..." if len(missing) > 20 else "")
        warning = (f"no face found in {len(missing)} of {total} {what} (frames {shown}); "
                   "they are passed through unchanged")
        LOG.warning("LatentSync: %s", warning)
    payload = {"latentsync_faces": [{"frames": total, "with_face": found, "without_face": len(missing),
                                     "missing_frames": missing[:200], "warning": warning or ""}]}
    return payload, warning


def coverage_report(report, notes: list[str] | None = None) -> tuple[dict, str | None]:
    """The `ui` payload of a streamed run's `LipSyncReport`: what `face_report` gives (which logs the frames
    without a face), plus the bridged frames, the processed ranges, the length mode and `notes`."""
    coverage = report.coverage()
    payload, warning = face_report(report.has_face)
    if report.no_face_at_all:
        warning = report.warnings[0]
        LOG.warning("LatentSync: %s", warning)
    payload["latentsync_faces"][0].update(
        bridged=coverage["bridged"], detected=coverage["detected"], processed_ranges=coverage["processed_ranges"][:100],
        length_mode=report.plan.mode, warning=warning or "", notes=list(notes or []))
    return payload, warning
