"""Stage 2 of the pipeline: the spiking neurons (Kim et al. weighted spikes, Wang et al. radix)."""

from .radix import RadixLeaky
from .reset import reset
from .weighted import WeightedLeaky

__all__ = ["RadixLeaky", "WeightedLeaky", "reset"]
