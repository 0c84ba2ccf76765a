#!/usr/bin/env python3
"""Install this pack's Python dependencies into the interpreter that runs ComfyUI (what ComfyUI-Manager runs).

- pip installs `requirements.txt` with the SAME interpreter (`sys.executable -m pip`), never another one;
- torch / torchvision / torchaudio are never upgraded or replaced: the installed versions are passed as pip
  constraints, so a requirement that would need another torch fails instead of silently breaking ComfyUI;
- a requirement whose module is already importable under another distribution is skipped: opencv (any of
  opencv-python / -contrib / -headless provides `cv2`; a second one breaks the first) and onnxruntime
  (onnxruntime-gpu provides the same module);
- `--dry-run`: resolve only (pip's own `install --dry-run`), change nothing.

usage: python install.py [--dry-run] [--no-index] [--requirements FILE]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from importlib import metadata

HERE = os.path.dirname(os.path.abspath(__file__))
PROTECTED = ("torch", "torchvision", "torchaudio")
# distribution name (normalised) -> module that, when importable, means "already provided, do not install"
PROVIDED_BY_MODULE = {
    "opencv-python-headless": "cv2",
    "opencv-python": "cv2",
    "opencv-contrib-python": "cv2",
    "opencv-contrib-python-headless": "cv2",
    "onnxruntime": "onnxruntime",
}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(line: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
    return normalise(match.group(1)) if match else ""


def read_requirements(path: str) -> list[str]:
    lines = []
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
            if line:
                lines.append(line)
    return lines


def module_available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def plan(requirements: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """-> (lines to install, [(line, why it is skipped)])."""
    keep, skipped = [], []
    for line in requirements:
        name = requirement_name(line)
        if name in PROTECTED:
            skipped.append((line, "torch packages come with ComfyUI and are never changed here"))
            continue
        module = PROVIDED_BY_MODULE.get(name)
        if module and module_available(module):
            skipped.append((line, f"module '{module}' is already importable (another distribution provides it)"))
            continue
        keep.append(line)
    return keep, skipped


def torch_constraints() -> list[str]:
    pins = []
    for dist in PROTECTED:
        try:
            pins.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="resolve with pip --dry-run, install nothing")
    ap.add_argument("--no-index", action="store_true", help="resolve against what is installed (no package index)")
    ap.add_argument("--requirements", default=os.path.join(HERE, "requirements.txt"))
    args = ap.parse_args(argv)

    keep, skipped = plan(read_requirements(args.requirements))
    for line, why in skipped:
        print(f"[LatentSync install] skip {line}: {why}")
    if not keep:
        print("[LatentSync install] nothing to install")
        return 0
    pins = torch_constraints()
    with tempfile.TemporaryDirectory(prefix="latentsync-install-") as tmp:
        req_file = os.path.join(tmp, "requirements.txt")
        con_file = os.path.join(tmp, "constraints.txt")
        with open(req_file, "w", encoding="utf-8") as f:
            f.write("\n".join(keep) + "\n")
        with open(con_file, "w", encoding="utf-8") as f:
            f.write("\n".join(pins) + "\n")
        cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-r", req_file, "-c", con_file]
        if args.dry_run:
            cmd.append("--dry-run")
        if args.no_index:
            cmd.append("--no-index")
        print(f"[LatentSync install] {' '.join(cmd[2:])}  (constraints: {', '.join(pins) or 'none'})")
        return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
