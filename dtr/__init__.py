"""dtr: discrete text representations in JAX."""

__version__ = "0.1.0"
