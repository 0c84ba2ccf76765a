"""The admitted clips are worked out once per data set (by the main process) and read from the index on every later
start; a changed clip makes it stale."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from training.data import clip_index
from training.data.audio_cache import AudioFeatureCache, fill_caches
from training.data.clip_set import ClipSet


class OneProcess:
    is_main_process = True

    @contextlib.contextmanager
    def main_process_first(self):
        yield


class OtherRank(OneProcess):
    is_main_process = False


def test_clip_index_is_computed_once_and_refreshed_when_a_clip_changes(tmp_path, monkeypatch):
    clips = [tmp_path / f"c{i}.mp4" for i in range(3)]
    for clip in clips:
        clip.write_bytes(b"x")
    cache = AudioFeatureCache(tmp_path / "cache" / "mel")
    calls = []

    def admit(candidates, cache, window, fps):
        calls.append(list(candidates))
        return ClipSet(list(candidates[:2]), [50, 60], [10, 20], {str(candidates[2]): "too short"})

    monkeypatch.setattr(clip_index, "admit_clips", admit)
    first = clip_index.indexed_clips(OneProcess(), clips, cache, 16, 25.0)
    again = clip_index.indexed_clips(OtherRank(), clips, cache, 16, 25.0)  # another rank, or the next start
    assert len(calls) == 1 and again == first and again.clips == clips[:2] and again.skipped == first.skipped
    assert len(list((tmp_path / "cache").glob("clip_index-*.json"))) == 1
    os.utime(clips[0], ns=(1, 1))  # the data set changed: indexed again
    clip_index.indexed_clips(OneProcess(), clips, cache, 16, 25.0)
    assert len(calls) == 2
    with pytest.raises(RuntimeError, match="not written by the main process"):
        clip_index.indexed_clips(OtherRank(), clips, cache, 8, 25.0)


def test_fill_caches_does_not_read_what_is_cached(tmp_path, monkeypatch):
    clip = Path(tmp_path / "a.mp4")
    clip.write_bytes(b"a clip")  # cache entries are keyed by the clip's path, size and modification time
    cache = AudioFeatureCache(tmp_path / "mel", tmp_path / "whisper")
    for path in (cache.mel_path(clip), cache.embeds_path(clip)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"cached")
    monkeypatch.setattr(AudioFeatureCache, "mel", lambda self, c: pytest.fail("a cached mel was read"))
    monkeypatch.setattr(AudioFeatureCache, "embeds", lambda self, c: pytest.fail("cached embeddings were read"))
    fill_caches(cache, [clip], 0, 1, embeds=True)
