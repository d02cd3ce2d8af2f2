"""The ``snntorch-weighted`` console script: runs the demo (:mod:`snntorch_weighted.demo`).

``snntorch-weighted [options]`` and ``snntorch-weighted demo [options]`` are the same as
``python -m snntorch_weighted.demo [options]``; ``snntorch-weighted --help`` lists the options.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point declared in ``pyproject.toml``; returns the exit status."""
    from .demo import main as demo_main

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["demo"]:
        args = args[1:]
    return demo_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
