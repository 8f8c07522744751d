"""intint: Int&Int two-pathway skeleton action recognition, built around the data path.

Shards (WebDataset tars + Arrow intensity tables) → streaming two-pathway loader →
two SlowOnly pathways trained together on Ray Train → late fusion.
"""

__version__ = "0.1.0"
