"""snntorch-weighted: weighted-phase (Kim et al. 2018) and radix (Wang et al.) spikes."""

from __future__ import annotations

from . import decision, metrics, quant, spikegen
from .convert import convert
from .graph import UnsupportedLayerError
from .network import SpikingNetwork
from .neurons import RadixLeaky, WeightedLeaky
from .reset import reset
from .simulate import SimulationResult, simulate

__version__ = "0.1.0"

__all__ = [
    "WeightedLeaky",
    "RadixLeaky",
    "reset",
    "spikegen",
    "convert",
    "simulate",
    "SimulationResult",
    "SpikingNetwork",
    "UnsupportedLayerError",
    "quant",
    "metrics",
    "decision",
    "__version__",
]
