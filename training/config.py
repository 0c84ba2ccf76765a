"""Training configs: our YAML files, command-line `key=value` overrides (omegaconf dot-list) and shortcuts.

Every config accepts the top-level shortcuts ``data_dir=DIR output_dir=DIR max_steps=N`` (so one command line fits
all of them); any other key is a dotted path into the file (``data.batch_size=4``, ``optimizer.lr=2e-5``).
Unknown keys are errors (a typo never silently does nothing).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

SHORTCUTS = {"data_dir": "data.data_dir", "output_dir": "run.output_dir", "max_steps": "run.max_train_steps"}
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(ValueError):
    """A config file or override is invalid; the message says which key and why."""


def resolve_config_path(name: str | Path) -> Path:
    """A path, or the name of one of our configs (`stage2`, `smoke_stage1.yaml`, ...)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    for candidate in (CONFIG_DIR / str(name), CONFIG_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"config not found: {name} (a YAML file, or one of: {known})")


def _expand(overrides: Sequence[str]) -> list[str]:
    out = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        key = key.strip().lstrip("+")
        out.append(f"{SHORTCUTS.get(key, key)}={value}")
    return out


OPEN_SECTIONS = ("model",)  # constructor arguments: any key may be added


def _load_file(path: Path) -> DictConfig:
    """A config file with its `base:` file (relative to it) merged underneath."""
    cfg = OmegaConf.load(path)
    base = cfg.pop("base", None)
    if base is not None:
        parent = _load_file(resolve_config_path(path.parent / base if not Path(base).is_absolute() else base))
        cfg = OmegaConf.merge(parent, cfg)
    return cfg


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """The config file (with `base:` files merged underneath) plus `overrides`. Keys are checked: an override of
    a key the config does not have is an error (except inside `model:`)."""
    path = resolve_config_path(path)
    cfg = _load_file(path)
    OmegaConf.set_struct(cfg, True)
    for section in OPEN_SECTIONS:
        if section in cfg:
            OmegaConf.set_struct(cfg[section], False)
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(_expand(overrides)))
    except Exception as exc:  # omegaconf raises several ConfigKeyError / ValidationError types
        raise ConfigError(f"{path}: bad override ({exc}). Keys must exist in the config; shortcuts: "
                          f"{', '.join(SHORTCUTS)}") from None
    OmegaConf.set_struct(cfg, False)
    return cfg


def require(cfg: DictConfig, key: str) -> object:
    """A value that must be set (not null / empty), with a message naming the override that sets it."""
    value = OmegaConf.select(cfg, key)
    if value in (None, ""):
        short = next((k for k, v in SHORTCUTS.items() if v == key), key)
        raise ConfigError(f"{key} is not set: pass {short}=... on the command line")
    return value
