"""Audio condition: 16 kHz mono waveform -> whisper hidden states -> one (50, 384) window per video frame."""
from .resample import TARGET_SAMPLE_RATE, to_mono_16k
from .whisper_encoder import WhisperAudioEncoder, save_random_whisper_checkpoint
from .windows import (
    as_fraction,
    crop_overlap_audio_window,
    frame_audio_windows,
    num_frames_for_duration,
    official_feature2chunks,
    official_num_chunks,
    window_indices,
)

__all__ = [
    "TARGET_SAMPLE_RATE",
    "WhisperAudioEncoder",
    "as_fraction",
    "crop_overlap_audio_window",
    "frame_audio_windows",
    "num_frames_for_duration",
    "official_feature2chunks",
    "official_num_chunks",
    "save_random_whisper_checkpoint",
    "to_mono_16k",
    "window_indices",
]
