"""The models a training run reads but does not train: VAE, Whisper, mask, and the frozen stage-2 supervisors
(StableSyncNet, VideoMAE-v2 for TREPA, LPIPS' backbone). Each comes from an explicit path in the config, else from
the models folder (downloaded there when allowed), or is a tiny random network for smoke runs."""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from latentsync import hub
from latentsync.models.stable_syncnet import StableSyncNet, load_stable_syncnet, syncnet_config
from latentsync.models.videomae_v2 import VideoMAEConfig, VideoMAEv2, load_videomae

TINY_MODELS_DIR = "tiny_models"


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def models_root(cfg: DictConfig, output_dir: Path) -> Path:
    """The models folder: `models.dir`, or a tiny random set in `<output_dir>/tiny_models` when `models.tiny_seed`
    is set (written once by the main process: call inside `accelerator.main_process_first()`)."""
    if cfg.models.get("tiny_seed") is not None:
        root = output_dir / TINY_MODELS_DIR
        if not (root / hub.TINY_MARKER).is_file():
            from latentsync.tools.make_tiny import make_tiny_model_set

            make_tiny_model_set(root, resolution=256, seed=int(cfg.models.tiny_seed))
        return root
    root = Path(cfg.models.dir).expanduser()
    if not root.is_dir():
        raise hub.ModelNotFoundError(f"models folder not found: {root} (set models.dir=DIR, a ComfyUI models/ "
                                     "folder, or run python -m latentsync.tools.fetch_models --models DIR --training)")
    return root


def _explicit(path) -> Path | None:
    if path in (None, ""):
        return None
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"configured model file not found: {p}")
    return p


def locate_frozen_files(cfg: DictConfig, root: Path, needs: list[str]) -> dict[str, Path]:
    """Paths of the downloadable frozen networks in `needs` (keys of `hub.TRAINING_FILES`): the configured path,
    else the models folder (downloading when `models.download`). All missing files are named in ONE error."""
    found, errors = {}, []
    for which in needs:
        explicit = _explicit(cfg.models.get(which))
        if explicit is not None:
            found[which] = explicit
            continue
        try:
            found[which] = hub.locate_training_file(root, which, download=bool(cfg.models.download))
        except hub.ModelNotFoundError as exc:
            errors.append(str(exc))
    if errors:
        raise hub.ModelNotFoundError(
            f"{len(errors)} frozen network(s) that this training config needs are missing (fetch them with "
            f"`python -m latentsync.tools.fetch_models --models {root} --training`, or point models.<name> at a "
            "local file):\n" + "\n".join(errors))
    return found


def build_stable_syncnet(section: DictConfig, path: Path | None, device, dtype) -> tuple[StableSyncNet, int, bool]:
    """(frozen net, input resolution, lower_half). `section.model` (mapping) overrides the named `section.config`;
    `section.random_init` builds it without weights (smoke runs)."""
    model = _plain(section.model) if section.get("model") else syncnet_config(section.config)
    if section.get("random_init"):
        gen_state = torch.random.fork_rng(devices=[])
        with gen_state:
            torch.manual_seed(int(section.get("seed", 0)))
            net = StableSyncNet(model).to(device=device, dtype=dtype)
        net = net.eval().requires_grad_(False)
    else:
        net = load_stable_syncnet(path, model, device=device, dtype=dtype)
    return net, int(section.resolution), bool(section.lower_half)


def build_videomae(section: DictConfig, path: Path | None, device, dtype) -> VideoMAEv2:
    cfg = VideoMAEConfig(**_plain(section.model)) if section.get("model") else VideoMAEConfig()
    if section.get("random_init"):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(section.get("seed", 0)))
            model = VideoMAEv2(cfg)
        return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return load_videomae(path, cfg, device=device, dtype=dtype)
