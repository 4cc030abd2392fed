"""sparsefield: sparse neural fields and few-shot 3D reconstruction in JAX."""

__version__ = "0.1.0"
