"""The admitted clips of a data set (frame counts, last usable start frame, the skipped ones and why), worked out
once per data set by the first process and kept on disk beside the audio caches (``clip_index-<list>.json``): a restart,
and every other rank, reads that one file instead of opening every clip and every mel again. The file is keyed by
each clip's path, size and modification time and by the window and frame rate, so a changed data set is indexed
again."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from pathlib import Path

from .audio_cache import AudioFeatureCache
from .clip_set import ClipSet, admit_clips

LOG = logging.getLogger("latentsync.training")
INDEX_NAME = "clip_index-{}.json"  # one file per clip list (a training and a validation list may share a cache)


def index_key(clips: list[Path], window: int, fps: float) -> str:
    stamps = []
    for clip in clips:
        st = Path(clip).stat()
        stamps.append([str(clip), st.st_size, st.st_mtime_ns])
    return hashlib.sha1(json.dumps([stamps, int(window), float(fps)]).encode()).hexdigest()


def _load(path: Path, key: str) -> ClipSet | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if data.get("key") != key:
        return None
    return ClipSet([Path(c) for c in data["clips"]], data["num_frames"], data["last_start"], data["skipped"])


def _save(path: Path, key: str, clip_set: ClipSet) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    tmp.write_text(json.dumps({"key": key, "clips": [str(c) for c in clip_set.clips],
                               "num_frames": clip_set.num_frames, "last_start": clip_set.last_start,
                               "skipped": clip_set.skipped}), encoding="utf-8")
    os.replace(tmp, path)


def indexed_clips(accelerator, clips: list[Path], cache: AudioFeatureCache, window: int = 16,
                  fps: float = 25.0) -> ClipSet:
    """`admit_clips` done once per data set: by the main process when the index is missing or stale (the others
    wait, then read it), from the index file on every later start and on every other rank."""
    key = index_key(clips, window, fps)
    name = hashlib.sha1(json.dumps([[str(c) for c in clips], int(window), float(fps)]).encode()).hexdigest()[:16]
    path = cache.mel_dir.parent / INDEX_NAME.format(name)
    with accelerator.main_process_first():
        clip_set = _load(path, key)
        if clip_set is None:
            if not accelerator.is_main_process:
                raise RuntimeError(f"the clip index {path} was not written by the main process: is the cache "
                                   "folder shared by every process?")
            clip_set = admit_clips(clips, cache, window, fps)
            _save(path, key, clip_set)
            LOG.info("training data: indexed %d clips (%d usable) into %s", len(clips), len(clip_set), path)
        else:
            LOG.info("training data: %d usable clips from the index %s", len(clip_set), path)
    return clip_set
