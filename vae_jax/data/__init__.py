"""One data pipeline for faces, galaxies and any folder of images.

sources (random access, uint8 H×W×C) → preprocessing (crop, resize, grey/RGB)
→ seeded split and shuffling → batches (grain), resumable from a checkpoint.
"""
