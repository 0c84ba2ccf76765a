"""Data preparation steps (used by `python -m training.prepare_data`): 25 fps decoding, scene cuts, segments,
face checks, alignment, sync filtering."""
