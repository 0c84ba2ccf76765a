"""Whisper encoder hidden states as LatentSync's audio condition (official `Audio2Feature._audio2feat`).

The encoder is `whisper.model.AudioEncoder` from the openai-whisper package, loaded from an OpenAI-format
checkpoint (`{"dims": {...}, "model_state_dict": {...}}`, e.g. `models/latentsync/whisper/tiny.pt`).
"""
from __future__ import annotations

import os
from dataclasses import asdict, fields

import numpy as np
import torch
import torch.nn.functional as F
from whisper.audio import log_mel_spectrogram
from whisper.model import AudioEncoder, ModelDimensions, Whisper

SAMPLE_RATE = 16000
HOP_LENGTH = 160  # samples per mel frame (100 frames / s)
WINDOW_MEL_FRAMES = 3000  # whisper's 30-s window
TOKENS_PER_WINDOW = WINDOW_MEL_FRAMES // 2  # conv2 has stride 2
MIN_SAMPLES = 2 * HOP_LENGTH  # one whisper token (20 ms)
EXPECTED_LOCATION = "models/latentsync/whisper/tiny.pt"


class WhisperAudioEncoder:
    """Frozen whisper encoder producing (T, L+1, D) features: for whisper-tiny (T, 5, 384), T = 50 tokens / s.

    Hidden state 0 is the input of block 1 (after both convs and the positional embedding), states 1..L are the
    block outputs; `ln_post` is not applied (as in the official code).
    """

    def __init__(self, encoder: AudioEncoder, n_mels: int, device: torch.device | str, dtype: torch.dtype):
        if encoder.positional_embedding.shape[0] < TOKENS_PER_WINDOW:
            raise ValueError(
                f"n_audio_ctx={encoder.positional_embedding.shape[0]} is too small: a 30-s window has "
                f"{TOKENS_PER_WINDOW} tokens"
            )
        self.encoder = encoder.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.n_mels = n_mels
        self.device = torch.device(device)
        self.dtype = dtype

    @property
    def num_layers(self) -> int:
        """Number of hidden states per token (L + 1)."""
        return len(self.encoder.blocks) + 1

    @property
    def width(self) -> int:
        return self.encoder.positional_embedding.shape[1]

    @classmethod
    def from_state_dict(
        cls,
        dims: dict,
        encoder_state_dict: dict[str, torch.Tensor],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> "WhisperAudioEncoder":
        """Build from OpenAI dims and an `encoder.`-less encoder state dict (strict; tensors cast to float32 first)."""
        device, dtype = _default_device_dtype(device, dtype)
        d = _model_dims(dims)
        encoder = AudioEncoder(d.n_mels, d.n_audio_ctx, d.n_audio_state, d.n_audio_head, d.n_audio_layer)
        state = {k: v.float() for k, v in encoder_state_dict.items()}
        if "positional_embedding" not in state:  # a buffer; deterministic sinusoids, recomputed by the constructor
            state["positional_embedding"] = encoder.positional_embedding
        result = encoder.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"whisper encoder state dict does not match dims {asdict(d)}: missing {result.missing_keys[:8]}, "
                f"unexpected {result.unexpected_keys[:8]}"
            )
        return cls(encoder, d.n_mels, device, dtype)

    @classmethod
    def from_file(
        cls, path: str | os.PathLike, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> "WhisperAudioEncoder":
        """Load an OpenAI-format whisper checkpoint.

        Defaults: CUDA in fp16 when available (as the official pipeline), else CPU in fp32.
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"whisper checkpoint not found: {path} (expected the OpenAI whisper tiny.pt, e.g. at "
                f"ComfyUI/{EXPECTED_LOCATION}; download: ByteDance/LatentSync-1.6 whisper/tiny.pt)"
            )
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or "dims" not in ckpt or "model_state_dict" not in ckpt:
            keys = list(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
            raise ValueError(
                f"{path} is not an OpenAI whisper checkpoint (expected keys 'dims' and 'model_state_dict', got {keys})"
            )
        prefix = "encoder."
        enc_state = {k[len(prefix):]: v for k, v in ckpt["model_state_dict"].items() if k.startswith(prefix)}
        if not enc_state:
            raise ValueError(f"{path} holds no 'encoder.*' weights")
        return cls.from_state_dict(ckpt["dims"], enc_state, device, dtype)

    def log_mel(self, waveform_16k) -> torch.Tensor:
        """(S,) 16 kHz waveform -> (n_mels, S // 160) float32 log-mel, normalised with the max of the whole clip."""
        audio = _check_waveform(waveform_16k).to(self.device)
        return log_mel_spectrogram(audio, n_mels=self.n_mels)

    @torch.no_grad()  # not inference_mode: the features may feed a U-Net that is being trained
    def features(self, waveform_16k, windows_per_batch: int = 4) -> torch.Tensor:
        """(S,) mono float waveform at 16 kHz -> (T, L+1, D) float32 on CPU.

        The mel is walked in 30-s windows (3000 frames, the last one zero-padded); each keeps
        int(true_frames / 2) tokens, so T = sum over windows (= S // 320 for clips up to 30 s).
        """
        mel = self.log_mel(waveform_16k)
        total = mel.shape[1]
        starts = list(range(0, total, WINDOW_MEL_FRAMES))
        out: list[torch.Tensor] = []
        for b in range(0, len(starts), windows_per_batch):
            batch_starts = starts[b : b + windows_per_batch]
            segs = [
                F.pad(mel[:, s : s + WINDOW_MEL_FRAMES], (0, max(0, s + WINDOW_MEL_FRAMES - total)))
                for s in batch_starts
            ]
            states = self._hidden_states(torch.stack(segs).to(self.dtype))  # (B, L+1, 1500, D)
            for s, st in zip(batch_starts, states):
                keep = min(WINDOW_MEL_FRAMES, total - s) // 2
                out.append(st[:, :keep].transpose(0, 1).float().cpu())
        return torch.cat(out, dim=0)

    def _hidden_states(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, 3000) -> (B, L+1, 1500, D): input of block 1, then each block's output (no ln_post)."""
        enc = self.encoder
        x = F.gelu(enc.conv1(mel))
        x = F.gelu(enc.conv2(x)).permute(0, 2, 1)
        x = (x + enc.positional_embedding[: x.shape[1]]).to(x.dtype)
        states = [x]
        for block in enc.blocks:
            x = block(x)
            states.append(x)
        return torch.stack(states, dim=1)


def save_random_whisper_checkpoint(
    path: str | os.PathLike,
    n_audio_state: int = 64,
    n_audio_layer: int = 2,
    n_audio_head: int = 2,
    n_mels: int = 80,
    seed: int = 0,
) -> dict:
    """Write a small random OpenAI-format whisper checkpoint (for tests and the tiny model set); returns its dims.

    The encoder has the real 1500-token context; the text decoder is minimal (1 layer, 16 context, 64 vocab) so
    that `whisper.model.Whisper(dims)` can still be built from the file. Weights: N(0, 1/fan_in) matrices,
    LayerNorm gains near 1, small biases, from a private `torch.Generator(seed)`.
    """
    dims = ModelDimensions(
        n_mels=n_mels,
        n_audio_ctx=TOKENS_PER_WINDOW,
        n_audio_state=n_audio_state,
        n_audio_head=n_audio_head,
        n_audio_layer=n_audio_layer,
        n_vocab=64,
        n_text_ctx=16,
        n_text_state=n_audio_state,
        n_text_head=n_audio_head,
        n_text_layer=1,
    )
    model = Whisper(dims)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
            elif name.endswith("weight"):  # every 1-D weight in whisper is a LayerNorm gain
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
    dims_dict = asdict(dims)
    torch.save({"dims": dims_dict, "model_state_dict": model.state_dict()}, os.fspath(path))
    return dims_dict


def _model_dims(dims: dict) -> ModelDimensions:
    names = [f.name for f in fields(ModelDimensions)]
    missing = [n for n in names if n.startswith(("n_mels", "n_audio")) and n not in dims]
    if missing:
        raise ValueError(f"whisper dims lack {missing}")
    # Text-decoder dims are irrelevant for the encoder; fill any that are absent.
    return ModelDimensions(**{n: int(dims.get(n, 1)) for n in names})


def _default_device_dtype(device, dtype) -> tuple[torch.device, torch.dtype]:
    if device is None:
        from ..devices import default_device

        device = default_device()
    device = torch.device(device)
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    return device, dtype


def _check_waveform(waveform) -> torch.Tensor:
    """Validate a (S,) 16 kHz waveform and return it as float32 on CPU."""
    if isinstance(waveform, np.ndarray):
        waveform = torch.from_numpy(np.ascontiguousarray(waveform))
    if not torch.is_tensor(waveform):
        raise TypeError(f"waveform must be a tensor or numpy array, got {type(waveform).__name__}")
    if waveform.ndim != 1:
        raise ValueError(
            f"waveform must be mono (S,) at 16 kHz, got shape {tuple(waveform.shape)}; use to_mono_16k() first"
        )
    if not waveform.dtype.is_floating_point:
        raise TypeError(f"waveform must be float in [-1, 1], got {waveform.dtype}; use to_mono_16k() first")
    if waveform.numel() < MIN_SAMPLES:
        raise ValueError(
            f"audio too short: {waveform.numel()} samples; need at least {MIN_SAMPLES} (20 ms at 16 kHz)"
        )
    waveform = waveform.detach().float().cpu()
    if not torch.isfinite(waveform).all():
        raise ValueError("waveform contains NaN or infinite samples")
    return waveform
