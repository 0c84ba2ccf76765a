"""Which exported checkpoints (`<output_dir>/checkpoints/step-N/`, full U-Nets of several GB) stay on disk: the
`ckpt.keep_checkpoints` newest, plus the best by a validation metric (`ckpt.best_metric`, e.g. the SyncNet-v2 sync
confidence) among those validated at their own step. Each folder's validation numbers are kept beside the weights
(`validation.json`), so the choice survives a resumed run."""
from __future__ import annotations

import json
import logging
import math
import re
import shutil
from pathlib import Path

LOG = logging.getLogger("latentsync.training")
VALIDATION_FILE = "validation.json"
STEP_FOLDER = re.compile(r"step-(\d+)")


def record_validation(folder: Path, values: dict[str, float]) -> None:
    tmp = folder / (VALIDATION_FILE + ".tmp")
    tmp.write_text(json.dumps(values, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(folder / VALIDATION_FILE)


def _score(folder: Path, metric: str) -> float | None:
    path = folder / VALIDATION_FILE
    if not path.is_file():
        return None
    value = json.loads(path.read_text(encoding="utf-8")).get(metric)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def checkpoints_to_keep(root: Path, keep_last: int | None, best_metric: str | None,
                        best_mode: str = "max") -> tuple[list[Path], Path | None]:
    """(folders kept, the best one or None) among `root/step-N`, newest last. `keep_last` None keeps them all."""
    if best_mode not in ("max", "min"):
        raise ValueError(f"ckpt.best_mode must be max or min, got {best_mode!r}")
    folders = sorted((int(m.group(1)), p) for p in root.glob("step-*")
                     if p.is_dir() and (m := STEP_FOLDER.fullmatch(p.name)))
    ordered = [p for _, p in folders]
    keep = ordered if keep_last is None else ordered[max(0, len(ordered) - int(keep_last)):]
    best = None
    if best_metric:
        scored = [(s, p) for p in ordered if (s := _score(p, best_metric)) is not None]
        if scored:
            pick = max if best_mode == "max" else min
            best = pick(scored, key=lambda item: item[0])[1]
    kept = [p for p in ordered if p in keep or p == best]
    return kept, best


def rotate_checkpoints(root: Path, keep_last: int | None, best_metric: str | None, best_mode: str = "max") -> None:
    """Delete the step folders that `checkpoints_to_keep` does not keep (our own folders only)."""
    if keep_last is None and not best_metric:
        return
    if keep_last is not None and int(keep_last) < 1:
        raise ValueError(f"ckpt.keep_checkpoints must be at least 1 (or null: keep all), got {keep_last}")
    kept, best = checkpoints_to_keep(root, keep_last, best_metric, best_mode)
    for folder in root.glob("step-*"):
        if folder.is_dir() and STEP_FOLDER.fullmatch(folder.name) and folder not in kept:
            shutil.rmtree(folder)
            LOG.info("deleted checkpoint %s (ckpt.keep_checkpoints=%s; best: %s)", folder.name, keep_last,
                     best.name if best else None)
