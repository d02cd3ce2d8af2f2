"""snntorch-weighted: weighted-phase (Kim et al. 2018) and radix (Wang et al.) spikes.

The package follows the pipeline: ``spikegen`` (encode) -> ``neurons`` -> ``conversion`` ->
``simulation`` (simulate and measure); ``quant`` fine-tunes T-bit radix models.
"""

from __future__ import annotations

from . import quant, spikegen
from .conversion import SpikingNetwork, UnsupportedLayerError, convert
from .conversion.graph import check
from .export import NIRExportError, export_nir, import_nir
from .neurons import RadixLeaky, WeightedLeaky, reset
from .simulation import SimulationResult, decision, metrics, simulate
from .simulation.evaluate import EvaluationResult, evaluate

__version__ = "0.1.0"

__all__ = [
    "WeightedLeaky",
    "RadixLeaky",
    "reset",
    "spikegen",
    "convert",
    "simulate",
    "SimulationResult",
    "evaluate",
    "EvaluationResult",
    "SpikingNetwork",
    "UnsupportedLayerError",
    "check",
    "export_nir",
    "import_nir",
    "NIRExportError",
    "quant",
    "metrics",
    "decision",
    "__version__",
]
