"""Fixtures for the tests that run against a real ComfyUI server (one per test session, shared with tests/browser)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[1] / "harness"
if str(HARNESS) not in sys.path:
    sys.path.insert(0, str(HARNESS))

import comfy_session  # noqa: E402

# tests/conftest.py's shared_path (loaded by path: every conftest is imported as "conftest", so a name import
# could pick up this very file). Re-exported so test modules may still `from conftest import shared_path`.
shared_path = comfy_session.load_tests_conftest().shared_path


@pytest.fixture(scope="session")
def comfy_server():
    """The session's ComfyUI 0.3.75 server: this pack (--strict), the tiny model set, the real media."""
    media = [shared_path("media", name) for name in comfy_session.MEDIA][0].parent
    return comfy_session.acquire(media)


def pytest_sessionfinish(session, exitstatus):
    comfy_session.release()
