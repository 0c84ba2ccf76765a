"""Shared test helpers: where ../shared lives, and how a missing fixture is treated (a failure under CI)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LATENTSYNC_SHARED", REPO_ROOT.parent / "shared"))

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


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
