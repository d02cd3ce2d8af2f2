"""Developer sessions: `nox -s tests`, `lint`, `demo`, `tutorials`, `benchmarks`.

Set-up here pins the torch / torchvision builds this machine's package index carries; users install
the ranges in pyproject.toml.
"""

from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

TORCH = ["torch==2.14.1", "torchvision==0.29.1"]


def _install(session: nox.Session, extras: str) -> None:
    session.install(*TORCH)
    session.install("-e", f".[{extras}]")


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """Lint, then the whole test suite (fast: minutes on 2 CPU cores)."""
    _install(session, "test,dev")
    session.run("ruff", "check", ".")
    session.run("pytest", "-q", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff only."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", ".")


@nox.session(python="3.11")
def demo(session: nox.Session) -> None:
    """The offline demo on scikit-learn's bundled digits."""
    _install(session, "data,benchmarks")
    session.run("python", "-m", "snntorch_weighted.demo", *session.posargs)


@nox.session(python="3.11")
def tutorials(session: nox.Session) -> None:
    """Execute every tutorial notebook (offline, a few minutes each on CPU)."""
    _install(session, "data,tutorials")
    session.run("python", "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3")
    session.run("python", "tutorials/execute.py", *session.posargs)


@nox.session(python="3.11")
def benchmarks(session: nox.Session) -> None:
    """Every benchmark script (benchmarks/*.py); they rewrite their sections of BENCHMARKS.md.

    Extra arguments go to every script, e.g. ``nox -s benchmarks -- --quick --threads 1``.
    """
    _install(session, "benchmarks")
    scripts = sorted(
        path
        for path in Path("benchmarks").glob("*.py")
        if not path.name.startswith("_") and path.name != "plots.py"
    )
    if not scripts:
        session.error("no benchmark scripts found under benchmarks/")
    for script in scripts:
        session.run("python", str(script), *session.posargs)
