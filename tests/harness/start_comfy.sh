#!/usr/bin/env bash
# Start a headless CPU ComfyUI on a free loopback port with custom-node packs loaded from OUTSIDE the
# ComfyUI tree (symlinked into a per-run base directory), wait until it answers, print PID/PORT.
#
# usage: start_comfy.sh [-n PACK_DIR[=NAME]]... [-i INPUT_FILE_OR_DIR]... [-m MODELS_DIR] [-b BASE_DIR] [-p PORT]
#                       [--api-nodes] [--strict] [--timeout S] [-- extra main.py args]
#   -n  a custom node package dir (has __init__.py), linked as custom_nodes/NAME (default: its basename); repeatable
#   -m  a models root (checkpoints/, vae/, latentsync/...) linked as BASE/models (default: BASE/models as it is)
#   -i  file(s) or dir(s) whose files are copied into the run's input/ dir; repeatable
#   -b  run dir (default: fresh mktemp -d under $COMFY_RUNS); holds custom_nodes/ input/ output/ temp/ user/ server.log
#   --strict   exit 1 if any custom node or comfy_extras module failed to import
# prints (and writes BASE/comfy.env):  COMFY_PID=.. COMFY_PORT=.. COMFY_URL=.. COMFY_BASE=.. COMFY_LOG=..
# env: COMFY_PYTHON  the interpreter (default: <repo>/.venv/bin/python, else $COMFY_ROOT/venv/bin/python)
#      COMFY_MAIN    ComfyUI's main.py (default: <repo>/.comfy/ComfyUI/main.py, else $COMFY_ROOT/ComfyUI/main.py)
#      COMFY_RUNS    where fresh run dirs are made (default: ${TMPDIR:-/tmp}/comfy-runs; never inside the repo)
#      COMFY_ROOT    legacy layout of the shared harness (holds venv/ and ComfyUI/)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
if [ -n "${COMFY_ROOT:-}" ]; then
  PYBIN="${COMFY_PYTHON:-$COMFY_ROOT/venv/bin/python}"; MAIN="${COMFY_MAIN:-$COMFY_ROOT/ComfyUI/main.py}"
else
  PYBIN="${COMFY_PYTHON:-$REPO/.venv/bin/python}"; MAIN="${COMFY_MAIN:-$REPO/.comfy/ComfyUI/main.py}"
fi
RUNS="${COMFY_RUNS:-${TMPDIR:-/tmp}/comfy-runs}"
PACKS=(); INPUTS=(); BASE=""; PORT=""; API_NODES=0; STRICT=0; TIMEOUT=180; EXTRA=(); MODELS=""
while [ $# -gt 0 ]; do
  case "$1" in
    -n) if [ "${2#*=}" != "$2" ]; then PACKS+=("$(realpath "${2%%=*}")=${2#*=}"); else PACKS+=("$(realpath "$2")=$(basename "$(realpath "$2")")"); fi; shift 2;;
    -m) MODELS="$(realpath "$2")"; shift 2;;
    -i) INPUTS+=("$(realpath "$2")"); shift 2;;
    -b) BASE="$2"; shift 2;;
    -p) PORT="$2"; shift 2;;
    --api-nodes) API_NODES=1; shift;;
    --strict) STRICT=1; shift;;
    --timeout) TIMEOUT="$2"; shift 2;;
    --) shift; EXTRA=("$@"); break;;
    *) echo "unknown arg $1" >&2; exit 2;;
  esac
done
[ -x "$PYBIN" ] && [ -f "$MAIN" ] || { echo "run scripts/setup_env.sh first ($PYBIN / $MAIN missing)" >&2; exit 2; }
[ -n "$BASE" ] || { mkdir -p "$RUNS"; BASE="$(mktemp -d "$RUNS/run.XXXXXX")"; }
mkdir -p "$BASE"/{custom_nodes,input,output,temp,user}   # custom_nodes MUST exist with --base-directory
BASE="$(realpath "$BASE")"
# frontend: skip the first-run Templates browser (it covers the canvas in screenshots) and the release popups
mkdir -p "$BASE/user/default"
[ -f "$BASE/user/default/comfy.settings.json" ] || cat > "$BASE/user/default/comfy.settings.json" <<'JSON'
{"Comfy.TutorialCompleted": true, "Comfy.Workflow.ShowMissingNodesWarning": true}
JSON
for pn in "${PACKS[@]+"${PACKS[@]}"}"; do
  p="${pn%%=*}"; name="${pn#*=}"
  [ -f "$p/__init__.py" ] || [ "${p%.py}" != "$p" ] || { echo "not a node package: $p" >&2; exit 2; }
  ln -sfn "$p" "$BASE/custom_nodes/$name"
done
if [ -n "$MODELS" ]; then
  [ -d "$MODELS" ] || { echo "not a directory: $MODELS" >&2; exit 2; }
  [ ! -e "$BASE/models" ] || [ -L "$BASE/models" ] || { echo "$BASE/models exists and is not a link" >&2; exit 2; }
  ln -sfn "$MODELS" "$BASE/models"
fi
for i in "${INPUTS[@]+"${INPUTS[@]}"}"; do
  if [ -d "$i" ]; then cp -a "$i"/. "$BASE/input/"; else cp -a "$i" "$BASE/input/"; fi
done
[ -n "$PORT" ] || PORT="$("$PYBIN" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
ARGS=(--cpu --listen 127.0.0.1 --port "$PORT" --disable-auto-launch --base-directory "$BASE"
      --database-url "sqlite:///$BASE/user/comfyui.db" --log-stdout)
[ "$API_NODES" = 1 ] || ARGS+=(--disable-api-nodes)
LOG="$BASE/server.log"
T0=$(date +%s.%N)
# new session so the caller can kill the whole group; stdin closed
setsid "$PYBIN" "$MAIN" "${ARGS[@]}" "${EXTRA[@]+"${EXTRA[@]}"}" >"$LOG" 2>&1 </dev/null &
PID=$!
echo "$PID" > "$BASE/comfy.pid"
URL="http://127.0.0.1:$PORT"
while :; do
  if ! kill -0 "$PID" 2>/dev/null; then echo "ComfyUI exited during startup; log tail:" >&2; tail -40 "$LOG" >&2; exit 1; fi
  if "$PYBIN" -c "import urllib.request,sys; urllib.request.urlopen('$URL/system_stats', timeout=2)" 2>/dev/null; then break; fi
  if [ "$(echo "$(date +%s.%N) - $T0 > $TIMEOUT" | bc)" = 1 ]; then echo "timeout waiting for $URL" >&2; tail -40 "$LOG" >&2; kill "$PID"; exit 1; fi
  sleep 0.3
done
READY=$(printf '%.2f' "$(echo "$(date +%s.%N) - $T0" | bc)")
FAILS="$(grep -E 'IMPORT FAILED|Cannot import .* module for custom nodes|Error while calling comfy_entrypoint|did not return a (ComfyExtension|list of nodes)' "$LOG" || true)"
cat > "$BASE/comfy.env" <<ENV
COMFY_PID=$PID
COMFY_PORT=$PORT
COMFY_URL=$URL
COMFY_BASE=$BASE
COMFY_LOG=$LOG
COMFY_READY_S=$READY
ENV
cat "$BASE/comfy.env"
if [ -n "$FAILS" ]; then
  echo "WARNING: import failures:" >&2; echo "$FAILS" >&2
  if [ "$STRICT" = 1 ]; then kill "$PID"; exit 1; fi
fi
