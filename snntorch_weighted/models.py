"""The papers' networks (Kim et al. 2018, Table 1) and tiny nets for the demo and the tests.

All models are plain ``nn.Module`` ReLU networks without dropout, traceable by
``torch.fx.symbolic_trace`` and therefore convertible by :func:`snntorch_weighted.convert`.
Notation of Table 1: ``12c5`` = convolution with 12 kernels of 5x5, ``2s`` = 2x2 subsampling
(max pooling in Kim et al.), ``512`` = fully connected layer with 512 units.

| function | paper | input | layers |
|---|---|---|---|
| :func:`net1` | Net1 (Diehl 2015) | 1x28x28 | MLP 784-1200-1200-10 |
| :func:`net2` | Net2 (Diehl 2015) | 1x28x28 | 12c5-2s-64c5-2s-10 |
| :func:`net4` | Net4 (Rueckauer 2017) | 3x32x32 | 32c3-32c3-2s-64c3-64c3-2s-512-10 |
| :func:`resnet20` | Net5 (He 2016) | 3x32x32 | ResNet-20, 1x1 conv shortcuts |

Trained weights of these four networks ship with the package: ``pretrained("net4")`` builds the
network (with batch norm) and loads ``weights/net4.pt`` after checking its sha256 against the
manifest ``weights/net4.json`` (recipe, command, seed, dataset checksums, full-test-set accuracy,
date). They are trained by ``python -m snntorch_weighted.reference NAME`` on inputs
``uint8 pixel / 256``, e.g. ``data.load_fashion_mnist(split="test").rescaled(256)``.

Fine-tuned T-bit radix models of them (Wang et al.) ship as ``weights/NET-radixT.pt`` (the
state of the radix twin of :func:`snntorch_weighted.quant.prepare`) with manifests
``NET-radixT.json``: ``pretrained("net2", radix_bits=4)`` returns the prepared quantised model,
``available_pretrained()`` lists them as ``"net2-radix4"``. They are fine-tuned by
``python -m snntorch_weighted.reference NET --radix T`` (:mod:`snntorch_weighted.reference_radix`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "INPUT_SHAPES",
    "BasicBlock",
    "PretrainedWeightsError",
    "ResNetCIFAR",
    "available_pretrained",
    "digits_cnn",
    "digits_mlp",
    "net1",
    "net2",
    "net4",
    "pretrained",
    "radix_name",
    "read_manifest",
    "resnet20",
]


def _pool(pool: str, kernel: int = 2) -> nn.Module:
    if pool == "max":
        return nn.MaxPool2d(kernel)
    if pool == "avg":
        return nn.AvgPool2d(kernel)
    raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")


def digits_mlp(hidden: int = 64, num_classes: int = 10) -> nn.Sequential:
    """Tiny MLP for 8x8 digits: ``Flatten - 64-hidden - ReLU - hidden-classes``."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def digits_cnn(channels: int = 8, num_classes: int = 10, pool: str = "max") -> nn.Sequential:
    """Tiny CNN for 1x8x8 digits: ``{c}c3 (pad 1) - 2s - {2c}c3 (pad 1) - 2s - classes``."""
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=1),
        nn.ReLU(),
        _pool(pool),  # 8x8 -> 4x4
        nn.Conv2d(channels, 2 * channels, 3, padding=1),
        nn.ReLU(),
        _pool(pool),  # 4x4 -> 2x2
        nn.Flatten(),
        nn.Linear(2 * channels * 4, num_classes),
    )


def net1(num_classes: int = 10, batch_norm: bool = False) -> nn.Sequential:
    """Kim et al. Net1: MLP 784-1200-1200-10 (after Diehl et al. 2015) for 1x28x28 inputs.

    With ``batch_norm`` both hidden layers are followed by BatchNorm (folded away by conversion)
    and have no bias.
    """
    return nn.Sequential(
        nn.Flatten(),
        *_linear_block(784, 1200, batch_norm),
        *_linear_block(1200, 1200, batch_norm),
        nn.Linear(1200, num_classes),
    )


def _linear_block(n_in: int, n_out: int, batch_norm: bool) -> list[nn.Module]:
    if batch_norm:
        return [nn.Linear(n_in, n_out, bias=False), nn.BatchNorm1d(n_out), nn.ReLU()]
    return [nn.Linear(n_in, n_out), nn.ReLU()]


def _conv_block(
    c_in: int, c_out: int, kernel: int, batch_norm: bool, padding: int = 0
) -> list[nn.Module]:
    if batch_norm:
        conv = nn.Conv2d(c_in, c_out, kernel, padding=padding, bias=False)
        return [conv, nn.BatchNorm2d(c_out), nn.ReLU()]
    return [nn.Conv2d(c_in, c_out, kernel, padding=padding), nn.ReLU()]


def net2(num_classes: int = 10, pool: str = "max", batch_norm: bool = False) -> nn.Sequential:
    """Kim et al. Net2: CNN 12c5-2s-64c5-2s-10 (after Diehl et al. 2015) for 1x28x28 inputs.

    Convolutions without padding: 28 -> 24 -> (2s) 12 -> 8 -> (2s) 4, then a fully connected
    layer 64*4*4 -> 10. ``pool="max"`` is the paper's max subsampling; ``"avg"`` the alternative
    that rate-coded conversion handles exactly. With ``batch_norm`` each convolution is followed
    by BatchNorm (folded away by conversion) and has no bias.
    """
    return nn.Sequential(
        *_conv_block(1, 12, 5, batch_norm),
        _pool(pool),
        *_conv_block(12, 64, 5, batch_norm),
        _pool(pool),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, num_classes),
    )


def net4(num_classes: int = 10, pool: str = "max", batch_norm: bool = True) -> nn.Sequential:
    """Kim et al. Net4: CNN 32c3-32c3-2s-64c3-64c3-2s-512-10 (after Rueckauer et al. 2017).

    For 3x32x32 inputs; 3x3 convolutions with padding 1, 2x2 pooling, so 32 -> 16 -> 8 and the
    fully connected part is 64*8*8 -> 512 -> 10. With ``batch_norm`` (default) every convolution
    and the 512-unit layer are followed by BatchNorm (folded away by conversion); the layers
    before a BatchNorm have no bias.
    """
    features = [
        *_conv_block(3, 32, 3, batch_norm, padding=1),
        *_conv_block(32, 32, 3, batch_norm, padding=1),
        _pool(pool),
        *_conv_block(32, 64, 3, batch_norm, padding=1),
        *_conv_block(64, 64, 3, batch_norm, padding=1),
        _pool(pool),
    ]
    hidden = _linear_block(64 * 8 * 8, 512, batch_norm)
    return nn.Sequential(*features, nn.Flatten(), *hidden, nn.Linear(512, num_classes))


class BasicBlock(nn.Module):
    """Residual block of He et al. 2016: ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``.

    The shortcut is the identity when shape is kept, else a 1x1 strided convolution + BatchNorm
    (option B), so every path is a conv/BN/ReLU that ANN->SNN conversion can map (Kim et al.
    Fig. 6: the join neuron integrates both paths).
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + identity)


class ResNetCIFAR(nn.Module):
    """CIFAR ResNet of He et al. 2016 (sec. 4.2): 6n+2 weighted layers.

    ``conv3x3(16) - BN - ReLU - 3 stages of n BasicBlocks (widths, strides 1, 2, 2) -
    global average pooling - Linear``. Kim et al.'s Net5 has widths (16, 32, 32); He et al.'s
    ResNet-20 (the default of :func:`resnet20`) has (16, 32, 64).
    """

    def __init__(
        self,
        blocks_per_stage: int = 3,
        widths: Sequence[int] = (16, 32, 64),
        num_classes: int = 10,
        in_channels: int = 3,
    ):
        super().__init__()
        if len(widths) != 3 or blocks_per_stage < 1:
            raise ValueError(
                f"need 3 stage widths and blocks_per_stage >= 1, got {widths}, {blocks_per_stage}"
            )
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers: list[nn.Module] = []
        c_in = widths[0]
        for stage, width in enumerate(widths):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(c_in, width, stride))
                c_in = width
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c_in, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return self.fc(self.flatten(self.pool(x)))


def resnet20(num_classes: int = 10, widths: Sequence[int] = (16, 32, 64)) -> ResNetCIFAR:
    """ResNet-20 for 3x32x32 inputs (19 3x3 convolutions + 1 linear layer; Kim et al. Net5).

    Pass ``widths=(16, 32, 32)`` for the exact Net5 of Kim et al. Table 1.
    """
    return ResNetCIFAR(blocks_per_stage=3, widths=widths, num_classes=num_classes)


# --------------------------------------------------------------------------- pretrained weights

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

#: name -> (builder, keyword arguments) of the networks trained by ``snntorch_weighted.reference``.
PRETRAINED_BUILDERS: dict[str, tuple[Callable[..., nn.Module], dict]] = {
    "net1": (net1, {"batch_norm": True}),
    "net2": (net2, {"batch_norm": True}),
    "net4": (net4, {"batch_norm": True}),
    "resnet20": (resnet20, {}),
}

#: input shape (without the batch dimension) of each pretrained network.
INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "net1": (1, 28, 28),
    "net2": (1, 28, 28),
    "net4": (3, 32, 32),
    "resnet20": (3, 32, 32),
}


class PretrainedWeightsError(RuntimeError):
    """Committed weights are missing, or do not match their manifest."""


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def radix_name(net: str, num_bits: int) -> str:
    """Name of the fine-tuned T-bit radix model of ``net``: ``"NET-radixT"``."""
    return f"{net}-radix{num_bits}"


def _split_name(name: str) -> tuple[str, int | None]:
    """``"net2-radix4"`` -> ``("net2", 4)``; ``"net2"`` -> ``("net2", None)``; checks the base."""
    base, sep, bits = name.partition("-radix")
    if sep and not (bits.isdigit() and 1 <= int(bits) <= 16):
        raise ValueError(f"bad radix model name {name!r}; expected NET-radixT with T in 1..16")
    _check_name(base)
    return base, int(bits) if sep else None


def available_pretrained(weights_dir: str | Path | None = None) -> list[str]:
    """Names whose weights and manifest are present (``weights_dir`` defaults to the package's):
    the float ANNs (``"net2"``) and the fine-tuned radix models (``"net2-radix4"``)."""
    folder = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    radix = {p.stem for p in folder.glob("*-radix*.json")
             if p.stem.partition("-radix")[0] in PRETRAINED_BUILDERS
             and p.stem.partition("-radix")[2].isdigit()}  # fmt: skip
    return sorted(
        name
        for name in set(PRETRAINED_BUILDERS) | radix
        if (folder / f"{name}.pt").is_file() and (folder / f"{name}.json").is_file()
    )


def _command(name: str) -> str:
    base, bits = _split_name(name)
    radix = "" if bits is None else f" --radix {bits}"
    return f"python -m snntorch_weighted.reference {base}{radix} --threads 1"


def read_manifest(name: str, weights_dir: str | Path | None = None) -> dict:
    """The manifest ``NAME.json`` of committed weights (recipe, command, accuracy, sha256, ...);
    ``name`` is a float ANN (``"net2"``) or a radix model (``"net2-radix4"``)."""
    _split_name(name)
    folder = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    path = folder / f"{name}.json"
    if not path.is_file():
        raise PretrainedWeightsError(
            f"no manifest {path} for {name!r}: train it with `{_command(name)}`"
        )
    return json.loads(path.read_text())


def _checked_file(name: str, manifest: dict, folder: Path, check: bool) -> Path:
    """The weights file of ``manifest``, present and (with ``check``) of the manifest's sha256."""
    path = folder / manifest.get("weights_file", f"{name}.pt")
    retrain = f"retrain with `{manifest.get('command', _command(name))}`"
    if not path.is_file():
        raise PretrainedWeightsError(f"weights {path} for {name!r} are missing: {retrain}")
    if check:
        actual = file_sha256(path)
        if actual != manifest.get("sha256"):
            raise PretrainedWeightsError(
                f"{path} has sha256 {actual}, but its manifest says {manifest.get('sha256')}: "
                f"the file is corrupt or from another run; restore it or {retrain}"
            )
    return path


def pretrained(
    name: str,
    *,
    radix_bits: int | None = None,
    check: bool = True,
    weights_dir: str | Path | None = None,
) -> nn.Module:
    """A paper network with its committed reference weights, in eval mode.

    Builds ``name`` (``"net1"``, ``"net2"``, ``"net4"``, ``"resnet20"``; see
    :data:`PRETRAINED_BUILDERS`) and loads ``weights/NAME.pt`` from the package. With ``check``
    the file's sha256 must equal the one in ``weights/NAME.json``. The manifest records the
    training recipe and command, the test accuracy and the input range: the networks expect
    ``uint8 pixel / 256`` (``ImageDataset(..., divisor=256)``, Kim et al.'s ``[0, 1 - 2**-8]``).

    With ``radix_bits=T`` (or ``name="NET-radixT"``) it returns the fine-tuned T-bit radix model
    of Wang et al. instead: the float ANN prepared by :func:`snntorch_weighted.quant.prepare`
    with the committed twin state ``weights/NET-radixT.pt`` (weights, biases, clips) loaded, so
    ``convert(model, None, coding="radix", num_bits=T)`` gives its radix SNN. Its manifest
    names the float ANN's sha256, which must match the committed ``NET.pt``.

    Raises :class:`PretrainedWeightsError` when the weights are missing or do not match, naming
    the command that trains them (``python -m snntorch_weighted.reference NAME``, with
    ``--radix T`` for the radix models).
    """
    base, bits = _split_name(name)
    if radix_bits is not None:
        if bits is not None and bits != radix_bits:
            raise ValueError(f"{name!r} and radix_bits={radix_bits} disagree")
        _split_name(radix_name(base, radix_bits))
        bits = radix_bits
    if bits is not None:
        return _pretrained_radix(base, bits, check, weights_dir)
    manifest = read_manifest(name, weights_dir)
    folder = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    path = _checked_file(name, manifest, folder, check)
    builder, kwargs = PRETRAINED_BUILDERS[name]
    model = builder(**kwargs)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def _pretrained_radix(base: str, bits: int, check: bool, weights_dir) -> nn.Module:
    """The float ANN ``base``, prepared for T = ``bits``, with the committed twin state."""
    from .quant import prepare

    name = radix_name(base, bits)
    manifest = read_manifest(name, weights_dir)
    folder = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    path = _checked_file(name, manifest, folder, check)
    model = pretrained(base, check=check, weights_dir=weights_dir)
    base_sha = read_manifest(base, weights_dir).get("sha256")
    if check and manifest.get("base", {}).get("sha256") != base_sha:
        raise PretrainedWeightsError(
            f"{name!r} was fine-tuned from {base}.pt with sha256 "
            f"{manifest.get('base', {}).get('sha256')}, but the committed {base}.pt has "
            f"{base_sha}: fine-tune it again with `{manifest.get('command', _command(name))}`"
        )
    recipe = manifest.get("recipe", {})
    shape = manifest.get("input_shape", INPUT_SHAPES[base])
    # The clips of this calibration are overwritten by the state below; a ReLU that never fires
    # on the dummy batch gets clip 1 (the structure of the twin does not depend on the data).
    dummy = torch.linspace(0.0, 1.0, 2 * math.prod(shape)).reshape(2, *shape)
    prepare(model, num_bits=bits, weight_bits=manifest.get("weight_bits", 8),
            calibration_data=dummy, learn_clip=recipe.get("learn_clip", False))  # fmt: skip
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.radix_twin.load_state_dict(state)  # strict: every weight, bias and clip
    return model.eval()


def _check_name(name: str) -> None:
    if name not in PRETRAINED_BUILDERS:
        raise ValueError(
            f"unknown pretrained network {name!r}; choose one of {sorted(PRETRAINED_BUILDERS)}"
        )
