"""What evolves: strategy genes, their JSON encoding and a stable content hash.

Pure Python, no torch. ``fitness`` and ``evo`` build on this package, never the
other way round.
"""

from genomes.errors import InputError
from genomes.strategy import ChainGene, DecodingGene, Exemplar, PromptGene, Strategy

__all__ = ["ChainGene", "DecodingGene", "Exemplar", "InputError", "PromptGene", "Strategy"]
