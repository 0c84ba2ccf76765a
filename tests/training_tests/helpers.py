"""Helpers of the training tests: running our command lines and `accelerate launch`, reading the logs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT

# ContentDetector: the test videos are 15 fps footage resampled to 25 fps, whose repeated frames the official
# AdaptiveDetector (the default, tested in test_training_data) reads as extra cuts in 2 s scenes.
PREPARE_ARGS = ["--resolution", "128", "--face-backend", "offline", "--min-seconds", "1.9", "--max-seconds", "2.5",
                "--no-download", "--scene-detector", "content"]
LAUNCH_TIMEOUT = 900


def run_module(args: list[str], timeout: float = LAUNCH_TIMEOUT, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args[:6])} ... failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return proc


def launcher() -> list[str]:
    """`accelerate-launch`: accelerate's own console script for `accelerate launch` (the same
    `accelerate.commands.launch.main`, the same options), which starts the processes about 4 s sooner: the `accelerate`
    command imports every subcommand first, and its `estimate-memory` loads transformers. The README's spelling,
    `accelerate launch`, is what the `prepared` fixture (training_tests/conftest.py) runs."""
    return [str(Path(sys.executable).with_name("accelerate-launch"))]


def accelerate_launch(module: str, config: str, output: Path, data: Path, *overrides: str,
                      processes: int = 2) -> subprocess.CompletedProcess:
    """`accelerate-launch --multi_gpu --num_processes N -m MODULE --config CONFIG ...` (on this CPU machine the
    processes run DDP over gloo; one process runs without --multi_gpu)."""
    multi = ["--multi_gpu"] if processes > 1 else []
    return run_module([*launcher(), *multi, "--num_processes", str(processes), "--num_machines",
                       "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", module, "--config", config,
                       f"data_dir={data}", f"output_dir={output}", *overrides])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def losses(output: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_jsonl(output / "logs" / "metrics.jsonl") if "loss" in r}
