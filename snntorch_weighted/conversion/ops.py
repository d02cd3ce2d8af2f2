"""Canonical layers and value-moving ops of captured graphs (model zoo support).

* :class:`ClippedReLU` -- ``clamp(x, 0, ceiling)``: ``ReLU6``, ``Hardtanh(0, a)``, ``clamp(0, a)``.
  It subclasses ``nn.ReLU``, so every converter treats it as a neuron; the ceiling is a saturation
  (weighted / rate: the neuron's scale is at most the ceiling; radix: the clip is at most it).
* :class:`ChannelAffine` -- ``x * w[c] + b[c]`` per channel (dim 1): a BatchNorm in eval mode that
  does not follow a weight layer, a per-channel affine synapse (a weight layer of its own).
* *Moves*: ``view`` / ``reshape`` / ``flatten`` / ``transpose`` / ``permute`` / ``chunk`` /
  ``split`` / ``squeeze`` / ``unsqueeze`` / indexing / ``torch.cat`` and the ``size()`` /
  ``shape`` reads they use. They only move per-sample values; :func:`batch_mixing` checks that
  on tagged tensors. Every converter replays a move on its per-element maps (scales, neuron ids)
  with :func:`replay_move`, so a value keeps its own scale wherever it moves.
"""

from __future__ import annotations

import operator

import torch
from torch import Tensor, fx, nn

__all__ = ["ClippedReLU", "ChannelAffine", "is_move", "is_size_expr", "is_cat", "replay_move",
           "batch_mixing", "MOVE_METHODS", "MOVE_FUNCTIONS"]

MOVE_METHODS = {"view", "reshape", "flatten", "transpose", "permute", "chunk", "split", "size",
                "squeeze", "unsqueeze", "unflatten", "contiguous", "view_as", "reshape_as"}
MOVE_FUNCTIONS = {torch.flatten, torch.transpose, torch.reshape, torch.permute, torch.chunk,
                  torch.split, torch.squeeze, torch.unsqueeze, torch.cat, torch.concat,
                  operator.getitem, getattr, torch.unflatten}


class ClippedReLU(nn.ReLU):
    """``clamp(x, 0, ceiling)`` (``ReLU6`` for ceiling 6): a ReLU that saturates at ``ceiling``."""

    def __init__(self, ceiling: float) -> None:
        super().__init__()
        if not (isinstance(ceiling, (int, float)) and ceiling > 0 and ceiling < float("inf")):
            raise ValueError(f"ceiling must be a finite number > 0, got {ceiling!r}")
        self.ceiling = float(ceiling)

    def forward(self, x: Tensor) -> Tensor:
        return torch.clamp(x, 0.0, self.ceiling)

    def extra_repr(self) -> str:
        return f"ceiling={self.ceiling:g}"


class ChannelAffine(nn.Module):
    """``y = x * weight[c] + bias[c]`` along dim 1 (an eval-mode BatchNorm that cannot be folded).

    ``BatchNorm(x) = x g / sqrt(v + eps) + (beta - m g / sqrt(v + eps))``.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone().reshape(-1))
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone().reshape(-1))

    @classmethod
    def from_batchnorm(cls, bn: nn.modules.batchnorm._BatchNorm) -> ChannelAffine:
        """The eval-mode BatchNorm ``bn`` as a per-channel affine map (needs running stats)."""
        inv = torch.rsqrt(bn.running_var + bn.eps)
        gamma = bn.weight if bn.affine else torch.ones_like(inv)
        beta = bn.bias if bn.affine else torch.zeros_like(inv)
        with torch.no_grad():
            return cls(gamma * inv, beta - bn.running_mean * gamma * inv)

    def _shaped(self, t: Tensor, x: Tensor) -> Tensor:
        return t.view(1, -1, *([1] * (x.dim() - 2))).to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        out = x * self._shaped(self.weight, x)
        return out if self.bias is None else out + self._shaped(self.bias, x)

    def extra_repr(self) -> str:
        return f"channels={self.weight.numel()}, bias={self.bias is not None}"


def is_cat(node: fx.Node) -> bool:
    """``torch.cat`` / ``torch.concat`` (canonical after capture: ``torch.cat``)."""
    return node.op == "call_function" and node.target in (torch.cat, torch.concat)


_SIZE_ARITHMETIC = {operator.floordiv, operator.mul, operator.add, operator.sub, operator.neg,
                    operator.truediv, operator.mod}


def is_size_expr(node) -> bool:
    """A size read (``x.size()``, ``x.shape``, ``x.size(1)``, items of them) or integer arithmetic
    on size reads: values that are not tensors."""
    if not isinstance(node, fx.Node):
        return False
    if node.op == "call_method" and node.target == "size":
        return True
    if node.op == "call_function" and node.target is getattr:
        return len(node.args) == 2 and node.args[1] == "shape"
    if node.op == "call_function" and node.target is operator.getitem:
        return is_size_expr(node.args[0])
    if node.op == "call_function" and node.target in _SIZE_ARITHMETIC:
        nodes = [a for a in node.args if isinstance(a, fx.Node)]
        return bool(nodes) and all(is_size_expr(a) for a in nodes)
    return False


def is_move(node: fx.Node) -> bool:
    """A node that only moves per-sample values (or reads a size), see the module docs."""
    if is_size_expr(node):
        return True
    if node.op == "call_method":
        return node.target in MOVE_METHODS
    if node.op == "call_function":
        if node.target is getattr:
            return len(node.args) == 2 and node.args[1] == "shape"
        return node.target in MOVE_FUNCTIONS
    return False


def replay_move(node: fx.Node, env: dict) -> object:
    """Run the move ``node`` on the values of ``env`` (maps or tags in place of activations)."""
    args = fx.node.map_arg(node.args, lambda n: env[n])
    kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
    if node.op == "call_method":
        self_obj, *rest = args
        return getattr(self_obj, node.target)(*rest, **kwargs)
    return node.target(*args, **kwargs)


def _tag(shape: torch.Size) -> Tensor:
    """Per-sample tags: the values of sample b are ``b (mod B)`` (float64, exact, all distinct)."""
    batch, n = shape[0], 1
    for d in shape[1:]:
        n *= d
    index = torch.arange(n, dtype=torch.float64).view(1, *shape[1:]) * batch
    return index + torch.arange(batch, dtype=torch.float64).view(-1, *([1] * (len(shape) - 1)))


def _mixes(value, batch: int) -> bool:
    if isinstance(value, (tuple, list)):
        return any(_mixes(v, batch) for v in value)
    if not isinstance(value, Tensor):
        return False
    if value.dim() == 0 or value.shape[0] != batch:
        return True
    owner = torch.remainder(value.reshape(batch, -1), batch)
    return bool((owner != torch.arange(batch, dtype=owner.dtype).view(-1, 1)).any())


def batch_mixing(gm: fx.GraphModule, shapes: dict[fx.Node, torch.Size | None]) -> list[fx.Node]:
    """The moves of ``gm`` that mix samples of the batch (or drop the batch axis).

    ``shapes``: each node's output shape on a probe batch of at least 2 samples (None: not a
    tensor). Every tensor that is not made by a move is replaced by tags (the values of sample b
    are ``b`` modulo the batch size), the moves are replayed, and a move whose output holds another
    sample's tag in sample b (or has no batch axis of the same size) is reported.
    """
    env: dict = {}
    bad, tainted = [], set()
    for node in gm.graph.nodes:
        if node.op == "output":
            continue
        if not is_move(node):
            shape = shapes.get(node)
            env[node] = _tag(shape) if shape is not None else None
            continue
        if any(a in tainted for a in node.all_input_nodes):  # reported where it began
            tainted.add(node)
            env[node] = None
            continue
        try:
            env[node] = replay_move(node, env)
        except (RuntimeError, TypeError, IndexError, ValueError, AttributeError):
            bad.append(node)
            tainted.add(node)
            env[node] = None
            continue
        batch = next((env[a].shape[0] for a in node.all_input_nodes
                      if isinstance(env.get(a), Tensor) and env[a].dim()), None)
        if batch is not None and _mixes(env[node], batch):
            bad.append(node)
            tainted.add(node)
    return bad
