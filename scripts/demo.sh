#!/usr/bin/env bash
# The main job: lip-sync the bundled demo clip to the bundled speech through a real headless ComfyUI and write
# output/demo_lipsync.mp4. Uses the official weights when they are in ./models (or can be downloaded into it);
# otherwise says so plainly and runs the very same path with the tiny random model set (the mouth is then noise).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
MODELS="${LATENTSYNC_MODELS:-models}"
VERSION="${LATENTSYNC_VERSION:-1.5}"
mkdir -p output
if $PY -m latentsync.tools.fetch_models --models "$MODELS" --version "$VERSION" --face-backend insightface --no-syncnet; then
  echo "[demo] official model set ready in $MODELS (InsightFace)"
elif $PY -m latentsync.tools.fetch_models --models "$MODELS" --version "$VERSION" --face-backend offline --no-download --no-syncnet; then
  echo "[demo] official model set ready in $MODELS (InsightFace not available: offline face detector)"
else
  cat <<MSG
[demo] ==============================================================================
[demo] The official LatentSync weights are not available here (see the messages above).
[demo] Running the demo with the TINY RANDOM model set instead: the whole path runs end
[demo] to end through ComfyUI, but the generated mouth is noise. Put the official files in
[demo] ./$MODELS (or let the download succeed) for a real lip-sync.
[demo] ==============================================================================
MSG
  MODELS=.cache/tiny-models
  [ -f "$MODELS/TINY_MODEL_SET.txt" ] || $PY -m latentsync.tools.make_tiny --out "$MODELS" --resolution 256
  VERSION=1.5
fi
exec $PY scripts/comfy_demo.py --models "$MODELS" --version "$VERSION" --out output/demo_lipsync.mp4
