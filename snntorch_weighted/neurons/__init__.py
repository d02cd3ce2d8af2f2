"""Stage 2 of the pipeline: the spiking neurons (Kim et al. weighted spikes, Wang et al. radix)."""

from .leaky import RadixLeaky, WeightedLeaky
from .reset import reset

__all__ = ["RadixLeaky", "WeightedLeaky", "reset"]
