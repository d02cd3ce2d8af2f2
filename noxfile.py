"""Developer sessions: `nox -s tests` (default), `lint`, `demo`, `tutorials`, `benchmarks`.

* Every session runs on the interpreter that runs nox (``python3 -m nox`` / ``nox``), so no
  session is ever "skipped" for a missing interpreter; a missing one (``--python X.Y``) is an error.
* ``tests``, ``demo``, ``tutorials`` and ``benchmarks`` share one virtual environment,
  ``.nox/shared``, with the ``dev`` extra (tests, demo, tutorials, NIR, ruff); it is set up once and
  again only when pyproject.toml or the torch pins change. ``lint`` has a small one of its own.
* torch comes from PyTorch's CPU-only index (about 200 MB instead of several GB of CUDA
  libraries); when that index cannot be reached, from the default index. Set
  ``TORCH_INDEX_URL`` to use another index (e.g. ``https://download.pytorch.org/whl/cu128``).
* The pins below are the torch / torchvision builds this project is tested with; users install the
  ranges in pyproject.toml.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import nox
from nox.command import CommandFailed

nox.options.sessions = ["tests"]
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True  # never "skipped" with exit status 0

TORCH = ["torch==2.14.1", "torchvision==0.29.1"]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
SHARED = Path(".nox") / "shared"
EXTRAS = "dev"  # test + demo + tutorials + nir + ruff + nox


def _stamp() -> str:
    """Changes when the shared environment must be updated."""
    text = Path("pyproject.toml").read_text() + " ".join(TORCH) + sys.version
    return hashlib.sha256(text.encode()).hexdigest()


def _install_torch(session: nox.Session, python: str) -> None:
    index = os.environ.get("TORCH_INDEX_URL", CPU_INDEX)
    try:
        session.run(python, "-m", "pip", "install", "--retries", "1", "--timeout", "30",
                    "--index-url", index, *TORCH, external=True)
    except CommandFailed:
        session.warn(f"could not install {' '.join(TORCH)} from {index}; "
                     "trying pip's default index (this may be a CUDA build of torch)")
        session.run(python, "-m", "pip", "install", *TORCH, external=True)


def shared_python(session: nox.Session) -> str:
    """The shared environment's interpreter, created and set up on first use."""
    bin_dir = SHARED / ("Scripts" if os.name == "nt" else "bin")
    python = str(bin_dir / ("python.exe" if os.name == "nt" else "python"))
    stamp = SHARED / "nox-stamp"
    if not Path(python).exists():
        session.log(f"creating the shared environment {SHARED} with {sys.executable}")
        session.run(sys.executable, "-m", "venv", str(SHARED), external=True)
    if not stamp.exists() or stamp.read_text() != _stamp():
        session.run(python, "-m", "pip", "install", "-q", "--upgrade", "pip", external=True)
        _install_torch(session, python)
        session.run(python, "-m", "pip", "install", "-e", f".[{EXTRAS}]", external=True)
        stamp.write_text(_stamp())
    session.env["PATH"] = os.pathsep.join([str(bin_dir.resolve()), os.environ.get("PATH", "")])
    session.env["VIRTUAL_ENV"] = str(SHARED.resolve())
    return python


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """Lint, then the whole test suite (README blocks included; minutes on 2 CPU cores)."""
    python = shared_python(session)
    session.run(python, "-m", "ruff", "check", ".", external=True)
    session.run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *session.posargs,
                external=True)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff only (a small environment of its own)."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", ".")


@nox.session(python=False)
def demo(session: nox.Session) -> None:
    """The offline demo on scikit-learn's bundled digits; ``-- --help`` lists its options."""
    python = shared_python(session)
    session.run(python, "-m", "snntorch_weighted.cli", *session.posargs, external=True)


@nox.session(python=False)
def tutorials(session: nox.Session) -> None:
    """Execute every tutorial notebook and print its HEADLINE line.

    ``nox -s tutorials -- --output-dir tutorials/executed`` also writes the executed copies.
    """
    python = shared_python(session)
    session.run(python, "tutorials/execute.py", *session.posargs, external=True)


@nox.session(python=False)
def benchmarks(session: nox.Session) -> None:
    """Every benchmark script (benchmarks/*.py), each rewriting its section of BENCHMARKS.md.

    Extra arguments go to every script, e.g. ``nox -s benchmarks -- --quick --threads 1``.
    """
    python = shared_python(session)
    scripts = sorted(
        path
        for path in Path("benchmarks").glob("*.py")
        if not path.name.startswith("_") and path.name != "plots.py"
    )
    if not scripts:
        session.error("no benchmark scripts found under benchmarks/")
    for script in scripts:
        session.run(python, str(script), *session.posargs, external=True)
