"""On-disk caches of the per-clip audio features: the Wav2Lip mel (`<name>_mel.pt`, float64 (80, T)) and the
Whisper hidden states (`<name>_embeds.pt`, (T, 5, 384)), as the official training. Written atomically, so
several processes may fill one cache."""
from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

import torch

from latentsync.audio.wav2lip_mel import melspectrogram

from .clips import read_audio_16k


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
                 whisper: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.mel_dir = Path(mel_dir)
        self.embeds_dir = Path(embeds_dir) if embeds_dir is not None else None
        self.whisper = whisper

    def mel_path(self, clip: Path) -> Path:
        return self.mel_dir / f"{Path(clip).stem}_mel.pt"

    def embeds_path(self, clip: Path) -> Path:
        if self.embeds_dir is None:
            raise ValueError("no Whisper feature cache folder configured")
        return self.embeds_dir / f"{Path(clip).stem}_embeds.pt"

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
    default `<data_dir>/cache/{mel,whisper}` (or under the output folder for a file list)."""
    data_dir = data_cfg.get("data_dir")
    root = Path(data_dir).expanduser() / "cache" if data_dir else Path(output_dir) / "cache"
    mel = data_cfg.get("audio_mel_cache_dir")
    embeds = data_cfg.get("audio_embeds_cache_dir")
    return AudioFeatureCache(Path(mel).expanduser() if mel else root / "mel",
                             Path(embeds).expanduser() if embeds else root / "whisper", whisper=whisper)


def fill_caches(cache: AudioFeatureCache, clips: list[Path], rank: int, world: int, embeds: bool) -> None:
    """Compute the missing cache entries once, split between the processes (call a barrier afterwards)."""
    for clip in clips[rank::world]:  # what is on disk is not read again here
        if not cache.mel_path(clip).is_file():
            cache.mel(clip)
        if embeds and not cache.embeds_path(clip).is_file():
            cache.embeds(clip)
