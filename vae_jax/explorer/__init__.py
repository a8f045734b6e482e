"""Explore a trained model live in the browser: ``python bin/explore.py --workdir W``."""
