"""Stage-2 supervision: sync (frozen StableSyncNet), perceptual (LPIPS), TREPA (VideoMAE-v2 features)."""
