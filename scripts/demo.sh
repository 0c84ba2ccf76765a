#!/usr/bin/env bash
# The main job: lip-sync the bundled demo clip to the bundled speech through a real headless ComfyUI, by queueing
# the shipped workflow workflows/api/latentsync_video.json as it is, and write output/demo_lipsync.mp4. Uses the
# official weights when they are in ./models (or can be downloaded into it); otherwise says so plainly and runs the
# very same workflow on the tiny random model set (the mouth is then noise).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python scripts/comfy_demo.py --models "${LATENTSYNC_MODELS:-models}" --out output/demo_lipsync.mp4
