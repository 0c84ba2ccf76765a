"""Training LatentSync with accelerate: data preparation, StableSyncNet and U-Net training (stages 1 and 2).

Run as modules from the repository root, e.g. ``accelerate launch -m training.train_unet --config FILE``.
Everything model-related comes from `latentsync/`; this package only adds data, losses and the loops.
"""
