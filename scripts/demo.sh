#!/usr/bin/env bash
# The main job: lip-sync the bundled demo clip to the bundled speech and write output/demo_lipsync.mp4.
# Uses the official weights when they are in ./models or can be downloaded; otherwise says so plainly and runs
# the same path with the tiny random model set (the mouth is then noise).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
MODELS="${LATENTSYNC_MODELS:-models}"
VERSION="${LATENTSYNC_VERSION:-1.5}"
mkdir -p output
if $PY -m latentsync.tools.fetch_models --models "$MODELS" --version "$VERSION" --face-backend offline; then
  echo "[demo] official model set ready in $MODELS"
else
  echo "[demo] ============================================================================"
  echo "[demo] The official LatentSync weights are not available here (see the message above)."
  echo "[demo] Running the demo with the TINY RANDOM model set instead: the whole path runs end"
  echo "[demo] to end, but the generated mouth is noise. Put the official files in ./$MODELS"
  echo "[demo] (or let the download succeed) for a real lip-sync."
  echo "[demo] ============================================================================"
  MODELS=.cache/tiny-models
  [ -f "$MODELS/TINY_MODEL_SET.txt" ] || $PY -m latentsync.tools.make_tiny --out "$MODELS" --resolution 256
  VERSION=1.5
fi
exec bash scripts/demo_comfy.sh "$MODELS" "$VERSION"
