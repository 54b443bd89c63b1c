"""gtn-nas: Generative Teaching Networks for neural architecture search, on JAX."""

__version__ = "0.1.0"
