"""LatentSync lip-sync as a plain PyTorch library (no ComfyUI imports)."""

__version__ = "0.1.0"
