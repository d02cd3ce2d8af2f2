"""Execute the tutorial notebooks headlessly and print each one's headline result.

Usage: ``python tutorials/execute.py [--output-dir DIR] [--timeout S] [notebook ...]`` (default:
every ``tutorials/*.ipynb``; ``nox -s tutorials -- ARGS`` passes ARGS here).

* Every notebook prints one line starting with ``HEADLINE:``; it is printed here, and a notebook
  without one fails the run.
* ``--output-dir DIR`` writes the executed copies (outputs and plots embedded) to ``DIR`` and runs
  each notebook there, so the PNG files it saves land in ``DIR`` too; without it the notebooks run
  in ``tutorials/`` and the committed notebooks are never modified. The copies in
  ``tutorials/executed/`` were made with ``--output-dir tutorials/executed``.
* The kernel talks over IPC sockets (no "Kernel is running over TCP without encryption").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

MARK = "HEADLINE:"


def headlines(nb) -> list[str]:
    """The ``HEADLINE:`` lines printed by the notebook's code cells."""
    lines = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                lines += [line for line in output["text"].splitlines() if line.startswith(MARK)]
    return lines


def run(path: Path, timeout: int = 900, output_dir: Path | None = None) -> tuple[float, list[str]]:
    """Execute ``path``; return the seconds taken and its headline lines."""
    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    workdir = output_dir if output_dir is not None else path.parent
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as sockets:  # absolute IPC socket paths, any working dir
        km = KernelManager(kernel_name="python3", transport="ipc", ip=f"{sockets}/kernel")
        try:
            NotebookClient(nb, km=km, timeout=timeout,
                           resources={"metadata": {"path": str(workdir)}}).execute()
        finally:  # the client leaves a kernel it did not start running
            if km.has_kernel:
                km.shutdown_kernel(now=True)
    if output_dir is not None:  # executed copies, for reading; never the committed files
        nbformat.write(nb, output_dir / path.name)
    return time.perf_counter() - start, headlines(nb)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tutorials/execute.py",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to run (default: tutorials/*.ipynb)")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="write executed copies (and the saved plots) here")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = parser.parse_args(argv)
    try:
        import nbclient  # noqa: F401
        import nbformat  # noqa: F401
    except ImportError:
        parser.error('needs nbclient and nbformat: pip install -e ".[tutorials]"')
    paths = args.notebooks or sorted(Path(__file__).parent.glob("*.ipynb"))
    failed = []
    for path in paths:
        print(f"executing {path} ...", flush=True)
        seconds, lines = run(path, args.timeout, args.output_dir)
        for line in lines:
            print(f"  {line}", flush=True)
        if len(lines) != 1:
            failed.append(path.name)
            print(f"  expected one '{MARK}' line, got {len(lines)}", flush=True)
        print(f"  ok in {seconds:.1f} s", flush=True)
    if failed:
        print(f"notebooks without exactly one headline: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
