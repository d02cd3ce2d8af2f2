"""snntorch-weighted: weighted-phase (Kim et al. 2018) and radix (Wang et al.) spikes."""

from __future__ import annotations

import importlib
from typing import Any

from . import spikegen
from .neurons import RadixLeaky, WeightedLeaky
from .reset import reset

__version__ = "0.1.0"

__all__ = [
    "WeightedLeaky",
    "RadixLeaky",
    "reset",
    "spikegen",
    "convert",
    "simulate",
    "quant",
    "__version__",
]

_LAZY = {
    "convert": ("snntorch_weighted.convert", "convert"),
    "simulate": ("snntorch_weighted.simulate", "simulate"),
    "SpikingNetwork": ("snntorch_weighted.network", "SpikingNetwork"),
    "quant": ("snntorch_weighted.quant", None),
}


def __getattr__(name: str) -> Any:
    """Import the heavier sub-modules on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module 'snntorch_weighted' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attr is None else getattr(module, attr)
