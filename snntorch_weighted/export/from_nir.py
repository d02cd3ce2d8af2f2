"""Run a NIR graph written by :func:`~snntorch_weighted.export.to_nir.export_nir` in torch.

:func:`import_nir` maps each NIR node to a torch module and wires them with ``nirtorch``
(edges into one node are summed, as NIR specifies). It reads the nodes in the discrete-time
convention :func:`export_nir` writes (one step per call, ``dt = 1``, subtractive reset), which is
what ``snntorch.import_from_nir`` does not do in snntorch 1.0.0 (see ``docs/nir.md``): there an
``IF`` becomes a ``Leaky`` with ``beta=0.9``, one threshold per layer, and ``I`` has no mapping.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from .to_nir import require_nir

__all__ = ["IFNeuron", "Integrator", "NIRNetwork", "import_nir"]


class IFNeuron(nn.Module):
    """NIR's ``IF`` stepped with ``dt = 1``: :math:`v \\leftarrow v + r \\odot I(t)`,
    :math:`z(t) = [v > v_{thr}]`, then the reset.

    ``reset="subtract"`` (what :func:`export_nir` writes): :math:`v \\leftarrow v - v_{thr}
    \\odot z(t)`, applied as ``snntorch.Leaky`` applies it, at the start of the next step:
    :math:`v(t) = (v(t-1) + r \\odot I(t)) - v_{thr} \\odot z(t-1)` (the same values in exact
    arithmetic, and the same floating-point operations as ``snntorch.Leaky(beta=1,
    reset_mechanism="subtract")``). ``reset="v_reset"`` (NIR's reset, the default for a node
    without ``metadata["reset"]``): :math:`v \\leftarrow v_{reset}` where :math:`z(t) = 1`.

    The state is the membrane; ``forward(x, state)`` returns ``(z, state)`` (``nirtorch``'s
    convention for stateful modules).
    """

    def __init__(self, r: Tensor, v_threshold: Tensor, v_reset: Tensor,
                 reset: str = "v_reset") -> None:
        super().__init__()
        if reset not in ("subtract", "v_reset"):
            raise ValueError(f"reset must be 'subtract' or 'v_reset', got {reset!r}")
        self.reset = reset
        self.register_buffer("r", torch.as_tensor(r))
        self.register_buffer("v_threshold", torch.as_tensor(v_threshold))
        self.register_buffer("v_reset", torch.as_tensor(v_reset))

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        v = torch.zeros_like(x) if state is None else state
        if self.reset == "subtract":
            fired = (v > self.v_threshold).to(x.dtype)  # the spike of the previous step
            v = (v + self.r * x) - fired * self.v_threshold
            return (v > self.v_threshold).to(x.dtype), v
        fired = v > self.v_threshold
        v = torch.where(fired, self.v_reset, v) + self.r * x
        return (v > self.v_threshold).to(x.dtype), v


class Integrator(nn.Module):
    """NIR's ``I`` stepped with ``dt = 1``: :math:`v \\leftarrow v + r \\odot I(t)`; the output is
    the membrane ``v`` (``forward(x, state)`` returns ``(v, v)``)."""

    def __init__(self, r: Tensor) -> None:
        super().__init__()
        self.register_buffer("r", torch.as_tensor(r))

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        v = torch.zeros_like(x) if state is None else state
        v = v + self.r * x
        return v, v


class _Scale(nn.Module):
    """NIR's ``Scale``: ``x * scale`` element by element."""

    def __init__(self, scale: Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(scale))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class _SumPool2d(nn.Module):
    """NIR's ``SumPool2d`` (no padding): the sum over each window."""

    def __init__(self, kernel_size, stride) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride, divisor_override=1)


class NIRNetwork(nn.Module):
    """A NIR graph as a stepwise torch module: ``net(x_t)`` runs one time step on the held
    state and returns the graph's output; :meth:`reset` starts a new sequence.

    ``module`` is the ``nirtorch`` ``GraphModule`` (its submodules carry the NIR node names).
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self._state: dict | None = None

    def reset(self) -> None:
        """Forget the state (membranes) before the next sequence."""
        self._state = None

    def forward(self, x: Tensor) -> Tensor:
        out, self._state = self.module(x, self._state)
        return out


def _tuple(a) -> tuple[int, ...]:
    return tuple(int(v) for v in np.atleast_1d(a))


def _node_map(nir, dtype: torch.dtype) -> dict:
    """Torch modules for the NIR nodes :func:`export_nir` writes."""

    def tensor(a) -> Tensor:
        return torch.as_tensor(np.asarray(a)).to(dtype)

    def affine(node):
        bias = getattr(node, "bias", None)
        layer = nn.Linear(node.weight.shape[-1], node.weight.shape[-2], bias=bias is not None)
        layer.weight.data = tensor(node.weight)
        if bias is not None:
            layer.bias.data = tensor(bias)
        return layer

    def conv(node):
        cls = nn.Conv1d if isinstance(node, nir.Conv1d) else nn.Conv2d
        weight = tensor(node.weight)
        layer = cls(weight.shape[1] * node.groups, weight.shape[0], tuple(weight.shape[2:]),
                    stride=node.stride, padding=node.padding, dilation=node.dilation,
                    groups=node.groups)
        layer.weight.data, layer.bias.data = weight, tensor(node.bias)
        return layer

    return {
        nir.Affine: affine,
        nir.Linear: affine,
        nir.Conv1d: conv,
        nir.Conv2d: conv,
        nir.AvgPool2d: lambda n: nn.AvgPool2d(_tuple(n.kernel_size), _tuple(n.stride),
                                              _tuple(n.padding)),
        nir.SumPool2d: lambda n: _SumPool2d(_tuple(n.kernel_size), _tuple(n.stride)),
        nir.Flatten: lambda n: nn.Flatten(n.start_dim + 1,
                                          n.end_dim + 1 if n.end_dim >= 0 else n.end_dim),
        nir.Scale: lambda n: _Scale(tensor(n.scale)),
        nir.IF: lambda n: IFNeuron(tensor(n.r), tensor(n.v_threshold), tensor(n.v_reset),
                                   reset=n.metadata.get("reset", "v_reset")),
        nir.I: lambda n: Integrator(tensor(n.r)),
    }


def import_nir(graph: Any, dtype: torch.dtype | None = None) -> NIRNetwork:
    """A torch module that runs ``graph`` (a ``nir.NIRGraph`` or a ``.nir`` file path) step by
    step, reading it as :func:`export_nir` writes it (module docs).

    Args:
        graph: the NIR graph, or a path for ``nir.read``.
        dtype: the modules' dtype (default: the dtype of the graph's first weight or
            threshold, else float32).

    Raises:
        ValueError: a node type this importer does not map (named), or a ``SumPool2d`` with
            padding.
        ImportError: ``nir`` or ``nirtorch`` is not installed.
    """
    nir = require_nir()
    try:
        import nirtorch
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("import_nir needs 'nirtorch': pip install "
                          "'snntorch-weighted[nir]'") from err
    if not isinstance(graph, nir.NIRGraph):  # nir 1.0.8's type check rejects grouped convs
        graph = nir.read(graph, type_check=False)
    node_map = _node_map(nir, dtype or _graph_dtype(graph))
    known = (*node_map, nir.Input, nir.Output)
    unknown = {name: type(n).__name__ for name, n in graph.nodes.items()
               if not isinstance(n, known)}
    if unknown:
        raise ValueError(f"import_nir does not map these NIR nodes: {unknown}")
    for name, node in graph.nodes.items():
        if isinstance(node, nir.SumPool2d) and np.any(np.asarray(node.padding) != 0):
            raise ValueError(f"node '{name}': SumPool2d with padding is not defined in NIR")
    module = nirtorch.nir_to_torch(graph, node_map, dtype=dtype or _graph_dtype(graph))
    return NIRNetwork(module)


def _graph_dtype(graph) -> torch.dtype:
    for node in graph.nodes.values():
        for field in ("weight", "v_threshold", "r"):
            value = getattr(node, field, None)
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                return torch.from_numpy(np.zeros(0, dtype=value.dtype)).dtype
    return torch.float32
