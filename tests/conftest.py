"""Shared test helpers: where ../shared lives, and how a missing fixture is treated (a failure under CI)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LATENTSYNC_SHARED", REPO_ROOT.parent / "shared"))

HARNESS = REPO_ROOT / "tests" / "harness"
for _path in (REPO_ROOT, HARNESS):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import comfy_session  # noqa: E402  (stdlib only; starts nothing until a test asks for the server)


def shared_path(*parts: str) -> Path:
    """Path to a file under ../shared; fails the test under CI when it is missing, skips it elsewhere."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f"fixture file not found: {path}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def shared():
    return shared_path


@pytest.fixture(scope="session")
def comfy_server():
    """The session's real ComfyUI 0.3.75 server (started on first use, shared by tests/integration and
    tests/browser): this pack (--strict), the tiny model set, the real media."""
    return comfy_session.acquire(shared_path("media", comfy_session.MEDIA[0]).parent)


@pytest.fixture(scope="session")
def tiny_model_set(tmp_path_factory) -> Path:
    """The tiny random model set (256 px, v1.5), written once per session for the tests that need model files."""
    from latentsync.tools.make_tiny import make_tiny_model_set

    root = tmp_path_factory.mktemp("tiny_set") / "models"
    make_tiny_model_set(root, resolution=256, seed=0)
    return root


def pytest_sessionfinish(session, exitstatus):
    comfy_session.release()
