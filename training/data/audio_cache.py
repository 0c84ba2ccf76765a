"""On-disk caches of the per-clip audio features: the Wav2Lip mel (`<key>_mel.pt`, float64 (80, T)) and the
Whisper hidden states (`<key>_embeds.pt`, (T, 5, 384)), as the official training. The official names an entry by
the clip's file name alone, so VoxCeleb-style folders (`id00017/abc/00001.mp4`, `id00018/def/00001.mp4`) and two
data sets sharing a cache folder read each other's features; our key is the file stem plus a hash of the clip's
path relative to the data root, its size and its mtime (a changed file gets fresh features). Written atomically,
so several processes may fill one cache."""
from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import torch

from latentsync.audio.wav2lip_mel import melspectrogram

from .clips import DECODE_ERRORS, read_audio_16k


def _atomic_save(tensor: torch.Tensor, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    torch.save(tensor, tmp)
    os.replace(tmp, path)


def _cached(path: Path, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, ValueError):  # truncated or foreign file: recompute it
            path.unlink(missing_ok=True)
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_save(value, path)
    return value


class AudioFeatureCache:
    """`mel(clip)` and `embeds(clip)`; `whisper` is a callable waveform_16k -> (T, 5, 384) (or None when only
    mels are needed)."""

    def __init__(self, mel_dir: str | Path, embeds_dir: str | Path | None = None,
                 whisper: Callable[[torch.Tensor], torch.Tensor] | None = None, root: str | Path | None = None):
        self.mel_dir = Path(mel_dir)
        self.embeds_dir = Path(embeds_dir) if embeds_dir is not None else None
        self.whisper = whisper
        self.root = Path(root).expanduser().resolve() if root is not None else None  # the data root of the keys

    def key(self, clip: Path) -> str:
        """`<stem>-<16 hex>`: the stem for people, the hash of (path relative to the root, size, mtime) for
        uniqueness (a clip outside the root is keyed by its absolute path)."""
        path = Path(clip).expanduser().resolve()
        name = path.as_posix()
        if self.root is not None and path.is_relative_to(self.root):
            name = path.relative_to(self.root).as_posix()
        stat = path.stat()
        digest = hashlib.sha1(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        return f"{path.stem}-{digest}"

    def mel_path(self, clip: Path) -> Path:
        return self.mel_dir / f"{self.key(clip)}_mel.pt"

    def embeds_path(self, clip: Path) -> Path:
        if self.embeds_dir is None:
            raise ValueError("no Whisper feature cache folder configured")
        return self.embeds_dir / f"{self.key(clip)}_embeds.pt"

    def mel(self, clip: Path) -> torch.Tensor:
        return _cached(self.mel_path(clip), lambda: melspectrogram(read_audio_16k(clip).double()))

    def embeds(self, clip: Path) -> torch.Tensor:
        def compute() -> torch.Tensor:
            if self.whisper is None:
                raise RuntimeError(f"Whisper features of {clip} are not cached and no Whisper encoder was given")
            return self.whisper(read_audio_16k(clip)).float().cpu()

        return _cached(self.embeds_path(clip), compute)


def cache_for(data_cfg, output_dir: Path, whisper: Callable[[torch.Tensor], torch.Tensor] | None = None
              ) -> AudioFeatureCache:
    """The cache folders of a config's `data:` section: `audio_mel_cache_dir` / `audio_embeds_cache_dir`, by
    default `<data_dir>/cache/{mel,whisper}` (or under the output folder for a file list). Keys are relative to
    `data_dir`, else to the file list's folder."""
    data_dir = data_cfg.get("data_dir")
    root = Path(data_dir).expanduser() / "cache" if data_dir else Path(output_dir) / "cache"
    mel = data_cfg.get("audio_mel_cache_dir")
    embeds = data_cfg.get("audio_embeds_cache_dir")
    return AudioFeatureCache(Path(mel).expanduser() if mel else root / "mel",
                             Path(embeds).expanduser() if embeds else root / "whisper", whisper=whisper,
                             root=data_root(data_cfg))


def data_root(data_cfg) -> Path | None:
    """The folder clip paths are relative to: `data_dir`, else the file list's folder."""
    data_dir, fileslist = data_cfg.get("data_dir"), data_cfg.get("fileslist")
    if data_dir:
        return Path(data_dir).expanduser()
    return Path(fileslist).expanduser().parent if fileslist else None


def fill_caches(cache: AudioFeatureCache, clips: list[Path], rank: int, world: int, embeds: bool) -> None:
    """Compute the missing cache entries once, split between the processes (call a barrier afterwards). A clip
    whose audio does not decode is left out here; `admit_clips` reports it."""
    for clip in clips[rank::world]:
        try:
            cache.mel(clip)
            if embeds:
                cache.embeds(clip)
        except DECODE_ERRORS:
            continue
