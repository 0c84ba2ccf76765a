"""Audio condition: 16 kHz mono waveform -> whisper hidden states -> one (50, 384) window per video frame."""
from ..lazy import lazy_exports

_MODULES = {
    ".resample": ("TARGET_SAMPLE_RATE", "to_mono_16k"),
    ".whisper_encoder": ("WhisperAudioEncoder", "save_random_whisper_checkpoint"),
    ".windows": ("as_fraction", "crop_overlap_audio_window", "frame_audio_windows", "num_frames_for_duration",
        "official_feature2chunks", "official_num_chunks", "window_indices"),
}
__all__ = sorted(name for names in _MODULES.values() for name in names)
__getattr__ = lazy_exports(__name__, _MODULES)
