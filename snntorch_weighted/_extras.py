"""Optional dependencies: check them before any work starts and name the extra that installs them.

``require("sklearn", extra="data", purpose="load_digits")`` raises :class:`MissingDependencyError`
(an ``ImportError``) with the ``pip install`` line when ``sklearn`` cannot be imported.
"""

from __future__ import annotations

import importlib.util

__all__ = ["MissingDependencyError", "missing", "require"]

# import name -> distribution name on PyPI
_DISTRIBUTIONS = {
    "sklearn": "scikit-learn",
    "PIL": "pillow",
    "matplotlib": "matplotlib",
    "torchvision": "torchvision",
    "nbclient": "nbclient",
    "ipykernel": "ipykernel",
    "nir": "nir",
    "nirtorch": "nirtorch",
}


class MissingDependencyError(ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def missing(*modules: str) -> list[str]:
    """The import names among ``modules`` that cannot be found (nothing is imported)."""
    return [name for name in modules if importlib.util.find_spec(name) is None]


def require(*modules: str, extra: str, purpose: str) -> None:
    """Raise :class:`MissingDependencyError` unless every module in ``modules`` is importable.

    The message reads, e.g., ``the demo needs scikit-learn, matplotlib: pip install
    "snntorch-weighted[demo]"``.
    """
    absent = missing(*modules)
    if absent:
        names = ", ".join(_DISTRIBUTIONS.get(name, name) for name in absent)
        raise MissingDependencyError(
            f'{purpose} needs {names}: pip install "snntorch-weighted[{extra}]" '
            f'(or, in a clone, pip install -e ".[{extra}]")'
        )
