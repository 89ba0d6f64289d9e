"""tbg: partitioned graph embeddings in the style of PyTorch-BigGraph, driven by TwHIN-style YAML configs."""

__version__ = "0.1.0"
