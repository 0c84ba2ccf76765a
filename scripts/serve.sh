#!/usr/bin/env bash
# make serve: a real ComfyUI with this pack on 127.0.0.1:${COMFY_PORT:-8188}, the demo media in its input folder,
# and a models folder: the official weights when ./models holds them (or they can be downloaded), else the tiny
# random set (said plainly). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PORT="${COMFY_PORT:-8188}"
MODELS="${LATENTSYNC_MODELS:-models}"
VERSION="${LATENTSYNC_VERSION:-1.5}"
if $PY -m latentsync.tools.fetch_models --models "$MODELS" --version "$VERSION" --face-backend offline; then
  echo "[serve] models: official LatentSync $VERSION set in $MODELS"
else
  echo "[serve] models: the official weights are not available; serving the TINY RANDOM model set"
  echo "[serve]         (workflows run end to end, but the generated mouth is noise)"
  MODELS=.cache/tiny-models
  [ -f "$MODELS/TINY_MODEL_SET.txt" ] || $PY -m latentsync.tools.make_tiny --out "$MODELS" --resolution 256
fi
BASE="$(mktemp -d "${TMPDIR:-/tmp}/latentsync-serve.XXXXXX")"
OUT="$(COMFY_PYTHON="$PWD/$PY" bash tests/harness/start_comfy.sh -n "$PWD=ComfyUI-LatentSync" -m "$MODELS" \
        -i assets/demo -b "$BASE" -p "$PORT" --strict)"
eval "$OUT"
trap 'bash tests/harness/stop_comfy.sh "$COMFY_BASE" >/dev/null; rm -rf "$BASE"; echo "[serve] stopped"' EXIT INT TERM
echo "[serve] ComfyUI with ComfyUI-LatentSync: $COMFY_URL   (log: $COMFY_LOG)"
echo "[serve] templates: Workflow > Browse Templates > ComfyUI-LatentSync; demo media: demo_clip_15fps.mp4, demo_speech_arctic_a0007.wav"
echo "[serve] Ctrl-C to stop"
while kill -0 "$COMFY_PID" 2>/dev/null; do sleep 1; done
