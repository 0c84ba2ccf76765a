# Two commands do all the set-up on a fresh machine:
#   make demo   lip-sync the bundled demo clip (through a real headless ComfyUI) -> output/
#   make test   create .venv, install everything (ComfyUI 0.3.75 included), run the tests
PY := .venv/bin/python
SETUP_STAMP := .venv/.requirements.sha256

.PHONY: setup test test-fast demo serve bench parity clean

setup:
	bash scripts/setup_env.sh

test: setup
	cd tests && ../$(PY) -m pytest

test-fast: setup
	cd tests && ../$(PY) -m pytest -m "not integration and not browser"

demo: setup
	bash scripts/demo.sh

serve: setup
	bash scripts/serve.sh

bench: setup
	$(PY) -m bench

parity: setup
	@for k in unet:golden_tiny scheduler:golden_scheduler loop:golden_loop whisper:golden_whisper audio:golden_audio affine:golden_affine \
	          syncnet_v2:golden_syncnet_v2 stable_syncnet:golden_stable_syncnet wav2lip_mel:golden_wav2lip_mel \
	          train_math:golden_train_math; do \
	  $(PY) -m latentsync.parity $${k%%:*} ../shared/golden/$${k##*:}.pt || exit 1; done

clean:
	rm -rf output test-artifacts .pytest_cache
