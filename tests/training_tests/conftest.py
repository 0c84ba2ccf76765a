"""Session fixtures of the training tests: a tiny random model set, a raw video set made from ../shared/media, and
that set prepared once by `python -m training.prepare_data` (shared by the data and the training tests)."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from conftest import shared_path
from training_tests.helpers import PREPARE_ARGS, run_module

@pytest.fixture(scope="session")
def training_models(tiny_model_set) -> Path:
    """The tiny random model set (seed 0): the same files the smoke configs' `models.tiny_seed: 0` writes (the
    session's set: training only reads it)."""
    return tiny_model_set


@pytest.fixture(scope="session")
def raw_videos(tmp_path_factory) -> dict[str, Path]:
    from training_tests.media import make_raw_set

    return make_raw_set(shared_path("media", "clip_speaking_woman_frontal_350px_15fps.mp4").parent,
                        tmp_path_factory.mktemp("raw-videos"))


@pytest.fixture(scope="session")
def prepared(raw_videos, training_models, tmp_path_factory) -> dict:
    """prepare_data split across 2 processes by `accelerate launch` (as the README writes it; the training runs use
    `accelerate-launch`, the same launcher: helpers.launcher), without the sync filter (exercised by the re-run
    test)."""
    out = tmp_path_factory.mktemp("prepared")
    folder = raw_videos["cut"].parent
    accelerate = Path(sys.executable).with_name("accelerate")
    proc = run_module([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                       "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "training.prepare_data",
                       "--input", str(folder), "--output", str(out), "--models", str(training_models),
                       "--no-sync-filter", *PREPARE_ARGS])
    report = json.loads((out / "report.json").read_text())
    return {"dir": out, "input_dir": folder, "report": report, "stdout": proc.stdout, "stderr": proc.stderr,
            "clips": (out / "fileslist.txt").read_text().split()}


@pytest.fixture(scope="session")
def training_data(prepared, tmp_path_factory) -> Path:
    """A copy of the prepared data set for the training runs (their audio caches land inside it)."""
    data = tmp_path_factory.mktemp("training-data")
    shutil.copytree(prepared["dir"] / "clips", data / "clips")
    (data / "fileslist.txt").write_text("".join(f"{c}\n" for c in prepared["clips"]))
    return data
