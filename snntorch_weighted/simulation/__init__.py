"""Stages 4 and 5 of the pipeline: run a converted SNN over time and measure it (accuracy against
time steps, spikes, synaptic operations, early decision)."""

from . import decision, metrics
from .result import SimulationResult
from .runner import simulate

__all__ = ["SimulationResult", "decision", "metrics", "simulate"]
