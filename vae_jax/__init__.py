"""vae_jax: variational autoencoders in JAX/Flax for small image worlds.

Train the reference anime-face and galaxy VAEs (or one on any folder of
images), resume exactly after a crash, and look inside what they learned.
"""

__version__ = "0.1.0"
