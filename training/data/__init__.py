"""Training data: aligned clips on disk, audio caches, the U-Net and SyncNet datasets, the step sampler."""
