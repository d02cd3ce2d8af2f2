"""Import path kept for modules not yet updated: the neurons live in :mod:`.weighted` and
:mod:`.radix`. (To be removed once ``conversion/`` and ``simulation/`` import from there.)"""

from .radix import RadixLeaky
from .weighted import WeightedLeaky

__all__ = ["RadixLeaky", "WeightedLeaky"]
