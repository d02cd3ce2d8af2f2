"""Execute every tutorial notebook (outputs are not written back: the committed ones stay stripped).

Usage: ``python tutorials/execute.py [--output-dir DIR] [notebook ...]`` (default: all
``tutorials/*.ipynb``); ``--output-dir`` saves executed copies there.
"""

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def run(path: Path, timeout: int = 900, output_dir: Path | None = None) -> float:
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    if output_dir is not None:  # executed copies, for reading; never the committed files
        output_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, output_dir / path.name)
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    output_dir = None
    if argv[:1] == ["--output-dir"]:
        output_dir, argv = Path(argv[1]), argv[2:]
    here = Path(__file__).parent
    paths = [Path(p) for p in argv] or sorted(here.glob("*.ipynb"))
    for path in paths:
        print(f"executing {path} ...", flush=True)
        print(f"  ok in {run(path, output_dir=output_dir):.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
