#!/usr/bin/env bash
# make serve: a real ComfyUI with this pack on 127.0.0.1:${COMFY_PORT:-8188}, the demo media in its input folder,
# and a models folder: the official weights when ./models holds them (or they can be downloaded), else the tiny
# random set (said plainly; then served offline). Ctrl-C stops it. The same code path starts the tests' server
# (tests/harness/comfy_serve.py).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python tests/harness/comfy_serve.py --port "${COMFY_PORT:-8188}" \
     --models "${LATENTSYNC_MODELS:-models}" --version "${LATENTSYNC_VERSION:-1.5}"
