"""Cell search spaces: genotypes (pure descriptions) and the Flax modules built from them.

``get_space("nb201")`` or ``get_space("micro")`` gives a ``SearchSpace``; see ``base`` for the
interface and the built modules' calling convention. Nothing here knows about GTNs.
"""

from search_spaces.base import Genotype, SearchSpace, SizeDefaults
from search_spaces.micro import MicroGenotype, MicroSpace
from search_spaces.nb201 import NB201Genotype, NB201Space

from gtn_nas.core.cost import count_flops, count_params
from gtn_nas.errors import ArchitectureError

SPACES: dict[str, type[SearchSpace]] = {"nb201": NB201Space, "micro": MicroSpace}
_ALIASES = {"nasbench201": "nb201", "nas-bench-201": "nb201", "natsbench": "nb201",
            "enas": "micro", "nao": "micro"}


def get_space(name: str) -> SearchSpace:
    """The search space called ``name`` (case-insensitive; a few common aliases accepted)."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in SPACES:
        raise ArchitectureError(
            f"unknown search space {name!r}; valid spaces: {', '.join(SPACES)}")
    return SPACES[key]()


__all__ = [
    "ArchitectureError", "Genotype", "MicroGenotype", "MicroSpace", "NB201Genotype",
    "NB201Space", "SPACES", "SearchSpace", "SizeDefaults", "count_flops", "count_params",
    "get_space",
]
