"""Offline demo on scikit-learn's bundled 8x8 digits: spike codes and the two neurons at work.

Run: ``python -m snntorch_weighted.demo``.
"""

from __future__ import annotations

import argparse

import torch

from . import RadixLeaky, WeightedLeaky, reset, spikegen


def _digits(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images[:n], dtype=torch.float64).flatten(1) / 16.0
    return x, torch.tensor(data.target[:n])


def codes_demo(x: torch.Tensor, bits: int) -> None:
    """Encode, decode, and show the round trip is the documented quantisation."""
    w = spikegen.weighted(x, 2 * bits, bits)
    r = spikegen.radix(x, bits)
    print(f"digits {tuple(x.shape)} -> weighted train {tuple(w.shape)} (K={bits}, 2 periods), "
          f"radix train {tuple(r.shape)} (T={bits})")
    unsaturated = x < 1 - 2.0 ** -(bits + 1)
    err = (spikegen.decode_weighted(w, bits) - x)[unsaturated].abs().max().item()
    same = torch.equal(spikegen.decode_weighted(w, bits), spikegen.quantize(x, bits))
    print(f"  decode(weighted) == quantize: {same}, "
          f"max |decoded - x| below saturation = {err:.4f} (<= 2**-{bits + 1})")
    print(f"  decode(radix) == quantize: "
          f"{torch.equal(spikegen.decode_radix(r), spikegen.quantize(x, bits))}; "
          f"spikes per image: weighted {w.sum().item() / len(x) / 2:.1f} per period, "
          f"radix {r.sum().item() / len(x):.1f}")


def neurons_demo(x: torch.Tensor, bits: int, seed: int = 0) -> None:
    """A random 64-32 layer of each neuron on the encoded digits, checked against its equation."""
    gen = torch.Generator().manual_seed(seed)
    periods = 4
    weights = torch.randn(32, 64, generator=gen, dtype=torch.float64) / 8
    layer = WeightedLeaky(num_phases=bits, init_hidden=True)
    train = spikegen.weighted(x, periods * bits, bits)
    out = torch.stack([layer(s @ weights.T) for s in train])
    ann = torch.relu(spikegen.quantize(x, bits) @ weights.T)
    err = (spikegen.decode_weighted(out, bits) - ann.clamp(max=1 - 2.0**-bits)).abs().mean()
    print(f"WeightedLeaky(num_phases={bits}): {int(out.sum())} spikes in {periods} periods, "
          f"mean |decoded - ReLU(Wx)| = {err:.4f}")

    int_weights = torch.randint(-8, 9, (32, 64), generator=gen).double()
    bias = torch.randint(-64, 65, (32,), generator=gen).double()
    radix_layer = RadixLeaky(num_bits=bits, shift=4, bias=bias, init_hidden=True)
    reset(radix_layer)
    train = spikegen.radix(x, bits)
    silence = torch.zeros_like(train[0])
    out = torch.stack([radix_layer(s @ int_weights.T) for s in list(train) + [silence] * bits])
    got = spikegen.decode_radix(out[bits:], integer=True)
    codes = spikegen.quantize_code(x, bits).double()
    want = torch.floor((codes @ int_weights.T + bias) / 16).clamp(0, 2**bits - 1).long()
    print(f"RadixLeaky(num_bits={bits}, shift=4): {int(out.sum())} spikes in {2 * bits} steps "
          f"(latency {bits}), output == clamp(floor((q W + b) / 2**4), 0, 2**{bits}-1) "
          f"bit for bit: {torch.equal(got, want)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--bits", type=int, default=4)
    args = parser.parse_args(argv)
    x, _ = _digits(args.samples)
    codes_demo(x, args.bits)
    neurons_demo(x, args.bits)


if __name__ == "__main__":
    main()
