"""Held-out validation clips taken from the training list when no validation set is configured: a deterministic
split by a hash of each clip's path relative to the data root (independent of the list's order, and a clip stays
on its side when the list grows)."""
from __future__ import annotations

import hashlib
from pathlib import Path


def _rank(clip: Path, root: Path | None) -> str:
    path = Path(clip).expanduser().resolve()
    if root is not None and path.is_relative_to(Path(root).expanduser().resolve()):
        path = path.relative_to(Path(root).expanduser().resolve())
    return hashlib.sha1(path.as_posix().encode()).hexdigest()


def holdout_split(clips: list[Path], fraction: float, root: Path | None = None) -> tuple[list[Path], list[Path]]:
    """(training clips, held-out clips): the max(1, round(fraction x n)) clips of smallest hash are held out."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation.holdout_fraction must be in (0, 1), got {fraction}")
    if len(clips) < 2:
        raise ValueError(f"{len(clips)} clip(s) cannot be split into training and held-out validation clips: set "
                         "validation.data_dir / validation.fileslist, or validation.holdout_fraction=0 with "
                         "validation.every=0 (no SyncNet validation)")
    count = min(len(clips) - 1, max(1, round(fraction * len(clips))))
    held = set(sorted(clips, key=lambda c: _rank(c, root))[:count])
    return [c for c in clips if c not in held], [c for c in clips if c in held]
