"""One data pipeline for faces, galaxies and any folder of images.

sources (random access, uint8 H×W×C: folders, arrays, TFDS array_record,
procedural) → checked and decoded once into a cache, unusable items skipped
and reported → preprocessing (crop, resize, grey/RGB) → seeded split and
per-epoch shuffling → batches (grain), resumable from a checkpoint.
"""
