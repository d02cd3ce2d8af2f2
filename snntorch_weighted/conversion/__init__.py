"""Stage 3 of the pipeline: a trained ANN becomes an snntorch SNN (graph capture, calibration,
weighted / rate conversion, radix conversion)."""

from .convert import convert
from .graph import UnsupportedLayerError
from .network import SpikingNetwork

__all__ = ["SpikingNetwork", "UnsupportedLayerError", "convert"]
