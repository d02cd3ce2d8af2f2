"""Why a model cannot be converted: :class:`Blocker` rows (node, op, hint), the hints for the usual
suspects, and the one :class:`UnsupportedLayerError` that lists every blocker of a model."""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

__all__ = ["Blocker", "UnsupportedLayerError", "blocker", "blockers_error"]

_GATE = ("a multiplicative gate (e.g. squeeze-and-excitation) has no spiking counterpart: "
         "remove the gate branch and fine-tune")
_SMOOTH = "replace it with nn.ReLU (or nn.ReLU6) and fine-tune"
_HINTS: dict[str, str] = {
    "SiLU": _SMOOTH, "GELU": _SMOOTH, "Hardswish": _SMOOTH, "Mish": _SMOOTH, "ELU": _SMOOTH,
    "LeakyReLU": _SMOOTH, "PReLU": _SMOOTH, "Softplus": _SMOOTH, "Tanh": _SMOOTH,
    "silu": _SMOOTH, "gelu": _SMOOTH, "hardswish": _SMOOTH, "tanh": _SMOOTH,
    "Sigmoid": "a sigmoid gate: " + _GATE + "; as the last layer: drop it (keep the logits)",
    "Hardsigmoid": "a sigmoid gate: " + _GATE, "sigmoid": _GATE, "hardsigmoid": _GATE,
    "mul": _GATE, "matmul": "attention / products of activations: " + _GATE,
    "LayerNorm": "normalises each sample by its own statistics: replace it with BatchNorm and "
                 "fine-tune", "layer_norm": "replace it with BatchNorm and fine-tune",
    "GroupNorm": "replace it with BatchNorm and fine-tune",
    "MultiheadAttention": "attention multiplies activations: use a convolutional model",
    "scaled_dot_product_attention": "attention multiplies activations: use a convolutional model",
    "Softmax": "drop the final softmax (convert the logits)", "softmax": "drop the softmax",
    "einsum": "attention / products of activations: " + _GATE,
    "bmm": "attention / products of activations: " + _GATE,
    "Hardtanh": "only Hardtanh(0, a) is a saturating ReLU; use it or nn.ReLU",
}


class UnsupportedLayerError(ValueError):
    """A model the ANN -> SNN conversion cannot map; the message lists every blocking node."""

    def __init__(self, message: str, blockers: list[Blocker] | None = None) -> None:
        super().__init__(message)
        self.blockers = list(blockers or [])


@dataclass(frozen=True)
class Blocker:
    """One unsupported node: fx node name, op (layer type / function, with the module path), why
    and what to do."""

    node: str
    op: str
    hint: str

    def __str__(self) -> str:
        return f"node '{self.node}' ({self.op})" + (f": {self.hint}" if self.hint else "")


def _describe(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        kind = type(gm.get_submodule(node.target)).__name__
        return f"{kind} at '{node.target}'"
    if node.op == "call_function":
        name = getattr(node.target, "__name__", None) or repr(node.target)
        module = getattr(node.target, "__module__", None) or ""
        module = "operator" if module == "_operator" else module
        return f"{module}.{name}" if module and module != "builtins" else name
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    return f"{node.op} {node.target}"


def _short_kind(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)).__name__
    return str(getattr(node.target, "__name__", node.target))


def blocker(gm: fx.GraphModule, node: fx.Node, why: str = "") -> Blocker:
    hint = why or _HINTS.get(_short_kind(gm, node), "")
    if not hint and node.op == "get_attr":
        hint = ("a tensor used outside a layer (a layer scale, a position bias or class token): "
                "fold a scale into the layer before it; attention tokens cannot be converted")
    return Blocker(node.name, _describe(gm, node), hint)


def blockers_error(blockers: list[Blocker], supported: str) -> UnsupportedLayerError:
    """One error listing every blocker (``supported``: the supported layers, for the message)."""
    lines = "\n".join(f"  {b}" for b in blockers)
    return UnsupportedLayerError(
        f"{len(blockers)} node(s) not supported for ANN->SNN conversion:\n{lines}\n"
        f"Supported: {supported}, ReLU6/Hardtanh(0, a)/clamp(0, a), BatchNorm, Dropout, Identity, "
        "add, cat, mean over H/W, reshapes that keep the batch axis.", blockers)


