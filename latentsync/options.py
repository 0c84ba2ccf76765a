"""One set of lip-sync options: the command line's flags, the nodes' inputs and a batch job's columns.

`LipSyncOptions` holds what may change from one video to the next (sampling, length mode, faces, ...); `ModelOptions`
what a process loads once (model set, version, device, dtype, face backend). Each field carries its help text and,
for a choice, its choices; the command line is built from them (`add_arguments` / `from_args`), a job table's row is
read with `from_mapping` (strings as a CSV gives them, unknown names refused), and `validate()` checks the values once,
with the same error text wherever they came from.

Adding an option: add a field here with `option(...)` metadata and pass it on where it is used; the command line,
the batch runner and the per-job columns get it for free. Node inputs keep their own tooltips and defaults, and build
a `LipSyncOptions` with `LipSyncOptions(**inputs).validate()`.
"""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .devices import DEVICES
from .face.gaps import DEFAULT_MAX_GAP
from .timeline import LENGTH_MODE_ALIASES, LENGTH_MODES
from .x264 import FAST_PRESET, PRESETS

FACE_SELECTIONS = ("largest", "index", "center")
DTYPE_NAMES = ("auto", "fp32", "bf16", "fp16")
FACE_BACKENDS = ("auto", "insightface", "offline")
VERSIONS = ("1.5", "1.6")
CFG_BATCH_MODES = ("joint", "sequential")


class OptionError(ValueError):
    """An option with a value it cannot take; the message names the option and says what it accepts."""


def option(default, help: str, choices: tuple | None = None, minimum: float | None = None,
           maximum: float | None = None, flag: str | None = None, cli: bool = True):
    """A dataclass field with what the command line, the job tables and `validate()` need to know about it.
    `flag`: the command-line flag when it is not `--name-with-dashes` (a bool that defaults to True is switched off
    with `--no-name`)."""
    meta = {"help": help, "choices": choices, "minimum": minimum, "maximum": maximum, "flag": flag, "cli": cli}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _parse(value: Any, kind: type, name: str):
    """A value of the field's type from what a CSV or JSON job gives (strings included)."""
    if value is None:
        return None
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise OptionError(f"{name} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise OptionError(f"{name} must be a whole number, got {value!r}")
        try:
            number = float(str(value).strip()) if isinstance(value, str) else value
            if int(number) != number:
                raise ValueError
            return int(number)
        except (TypeError, ValueError):
            raise OptionError(f"{name} must be a whole number, got {value!r}") from None
    if kind is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise OptionError(f"{name} must be a number, got {value!r}") from None
    if kind is Path:
        return Path(str(value)).expanduser()
    return str(value).strip() if isinstance(value, str) else value


_KINDS = {"int": int, "float": float, "bool": bool, "str": str, "Path": Path, "str | None": str, "Path | None": Path}


class _Options:
    """What both option sets share: validation from the fields' metadata, parsing, the command line."""

    def validate(self):
        for f in fields(self):
            meta = f.metadata
            value = getattr(self, f.name)
            if value is None:
                continue
            if meta.get("choices") and value not in meta["choices"]:
                raise OptionError(f"unknown {f.name.replace('_', ' ')} {value!r}; choose one of "
                                  f"{', '.join(map(str, meta['choices']))}")
            if meta.get("minimum") is not None and value < meta["minimum"]:
                raise OptionError(f"{f.name.replace('_', ' ')} must be at least {meta['minimum']}, got {value}")
            if meta.get("maximum") is not None and value > meta["maximum"]:
                raise OptionError(f"{f.name.replace('_', ' ')} must be at most {meta['maximum']}, got {value}")
        self._check()
        return self

    def _check(self) -> None:
        """Rules between fields (subclasses)."""

    def replace(self, **changes):
        return dataclasses.replace(self, **changes).validate()

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], base=None, ignore: tuple[str, ...] = ()):
        """Options from a mapping of names (as the command line's flags without the dashes, `-` or `_`) to values,
        strings included, over `base` (default: the defaults). Empty strings mean "not set". Unknown names are
        refused, naming the known ones."""
        known = {f.name: f for f in fields(cls)}
        changes = {}
        for raw_name, value in values.items():
            name = str(raw_name).strip().replace("-", "_")
            if name in ignore:
                continue
            if name not in known:
                raise OptionError(f"unknown option {raw_name!r}; known options: {', '.join(sorted(known))}")
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            changes[name] = _parse(value, _KINDS.get(str(known[name].type), str), name)
        start = base if base is not None else cls()
        return dataclasses.replace(start, **changes).validate()

    def to_dict(self) -> dict:
        return {f.name: (str(v) if isinstance(v := getattr(self, f.name), Path) else v) for f in fields(self)}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        for f in fields(cls):
            meta = f.metadata
            if not meta.get("cli", True):
                continue
            kind = _KINDS.get(str(f.type), str)
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            dest = f.name
            if kind is bool:
                flag = meta.get("flag") or (f"--no-{f.name.replace('_', '-')}" if default else
                                            f"--{f.name.replace('_', '-')}")
                parser.add_argument(flag, dest=dest, action="store_false" if default else "store_true",
                                    help=meta["help"])
                parser.set_defaults(**{dest: default})
                continue
            flag = meta.get("flag") or f"--{f.name.replace('_', '-')}"
            help_text = meta["help"]
            if default is not None and "default" not in help_text:
                help_text = f"{help_text} (default: {default})"
            parser.add_argument(flag, dest=dest, type=kind, default=default, choices=meta.get("choices"),
                                help=help_text)

    @classmethod
    def from_args(cls, args: argparse.Namespace):
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if f.metadata.get("cli", True)}).validate()


@dataclass(frozen=True)
class LipSyncOptions(_Options):
    """What may change from one video to the next."""

    steps: int = option(20, "DDIM steps (official: 20)", minimum=1, maximum=1000)
    guidance: float = option(1.5, "classifier-free guidance on the audio (official: 1.5; 1.0 = off, faster)",
                             minimum=1.0, maximum=10.0)
    seed: int = option(1247, "seed of the starting noise", minimum=0)
    deepcache: bool = option(True, "DeepCache: faster sampling, nearly identical result (--no-deepcache: off)")
    deepcache_interval: int = option(3, "with DeepCache: a full U-Net pass every this many steps",
                                     minimum=2, maximum=10)
    length_mode: str = option("pingpong", "when audio and video differ in length: pingpong (default, official), "
                              "loop, cut_off (the shorter), silence (whole video, silence after the audio), "
                              "freeze (hold the last frame); bounce = pingpong",
                              choices=(*LENGTH_MODES, *LENGTH_MODE_ALIASES))
    max_gap: int = option(DEFAULT_MAX_GAP, "bridge detection gaps of up to this many frames by interpolating the "
                          f"alignment (default {DEFAULT_MAX_GAP}; 0: off); longer gaps pass through unchanged",
                          minimum=0)
    strict_faces: bool = option(False, "fail on the first frame without a face instead of passing it through")
    face_selection: str = option("largest", "which face when there are several (then tracked): the largest, the "
                                 "--face-index-th from the left, or the one nearest the centre of the frame",
                                 choices=FACE_SELECTIONS)
    face_index: int = option(0, "with --face-selection index: which face, counted from the left from 0", minimum=0)
    face_threshold: float = option(0.5, "detection confidence a face needs to be used (official: 0.5); higher "
                                   "ignores faint or background faces. The detector's own floor still applies "
                                   "(InsightFace 0.5, the offline detector 0.8)", minimum=0.0, maximum=1.0)
    cfg_batch: str = option("joint", "classifier-free guidance as one batch of two (joint, official, faster) or as "
                            "two halves one after the other (sequential: about half the U-Net's activation "
                            "memory, for small GPUs); the same frames", choices=CFG_BATCH_MODES)
    ff_chunks: int = option(1, "run the U-Net's feed-forward layers in this many pieces (1: in one; 2-8 lower the "
                            "activation peak on small GPUs, slightly slower); the same frames", minimum=1,
                            maximum=64)
    compile: bool = option(False, "compile the U-Net's blocks with torch.compile (GPU: faster after a first "
                           "window that takes minutes to compile; needs a working Triton / C++ compiler)")
    overlap: bool = option(True, "overlap the stages: the next windows are read, detected and aligned and the "
                           "previous ones pasted back and encoded while the model works (--no-overlap: one after "
                           "another; the output is the same frame for frame)")
    preset: str = option(FAST_PRESET, "H.264 encoder preset of the output: faster presets encode sooner but give "
                         "larger files at the same quality", choices=PRESETS)

    def pipeline_kwargs(self) -> dict:
        """The keyword arguments of `LipSyncPipeline.run` these options set."""
        return dict(steps=self.steps, guidance=self.guidance, deepcache=self.deepcache,
                    deepcache_interval=self.deepcache_interval, seed=self.seed, max_gap=self.max_gap,
                    strict_faces=self.strict_faces, overlap=self.overlap, cfg_batch=self.cfg_batch,
                    ff_chunks=self.ff_chunks, compile=self.compile)

    def writer_kwargs(self) -> dict:
        """The keyword arguments of `VideoWriter` these options set."""
        return dict(preset=self.preset)

    def face_selector(self, frame_size: tuple[int, int] | None = None):
        """The face selector of these options; `frame_size` (H, W) is needed for "center"."""
        from .face.selection import FaceSelector

        if self.face_selection == "center":
            if frame_size is None:
                raise ValueError("face selection 'center' needs the frame size")
            h, w = frame_size
            return FaceSelector(mode="nearest", point=(w / 2, h / 2), min_score=float(self.face_threshold))
        return FaceSelector(mode=self.face_selection, index=int(self.face_index),
                            min_score=float(self.face_threshold))


@dataclass(frozen=True)
class ModelOptions(_Options):
    """What a process loads once: the model set and where it runs."""

    version: str = option("1.5", "1.5: 256 px, 1.6: 512 px", choices=VERSIONS)
    models: Path = option(Path("models"), "models root laid out like ComfyUI's models/ folder (default: ./models)")
    face_backend: str = option("auto", "auto (default): insightface when buffalo_l is in --models or can be "
                               "downloaded, else offline", choices=FACE_BACKENDS)
    device: str | None = option(None, "default: cuda when available, else mps (Apple silicon) when available, "
                                "else cpu", choices=DEVICES)
    dtype: str = option("auto", "auto: fp16 on recent NVIDIA GPUs and on MPS, fp32 on the CPU; bf16/fp16 that the "
                        "CPU runs badly become fp32", choices=DTYPE_NAMES)
    download: bool = option(True, "only use files already in --models", flag="--no-download")
    loras: tuple = option((), "LoRA files of the U-Net merged into its weights: (path, strength) pairs "
                          "(the command line's repeatable --lora FILE[:STRENGTH])", cli=False)

    def torch_dtype(self):
        import torch

        return {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.dtype]

    def resolved_device(self) -> str:
        """The device to run on; a device that is not there is refused with a clear message."""
        from .devices import default_device, unavailable_reason

        if self.device is None:
            return default_device()
        if (reason := unavailable_reason(self.device)) is not None:
            raise OptionError(reason)
        return self.device
