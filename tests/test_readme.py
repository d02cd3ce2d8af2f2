"""The README cannot rot: its Python blocks run as written; the commands, options, extras, links
and executed notebooks it names exist; the nox set-up fails loudly instead of skipping."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```python\n(.*?)^```$", README, re.S | re.M)


def _heading_of(block: str) -> str:
    before = README[: README.index(block)]
    return re.findall(r"^## (.+)$", before, re.M)[-1]


def _section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end >= 0 else None]


def _run(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


# --------------------------------------------------------------------------- Python blocks


def test_the_readme_has_its_python_blocks():
    assert len(BLOCKS) >= 4
    assert {"Drop-in neurons", "Bring your own model",
            "Convert a trained ANN and simulate it"} <= {_heading_of(b) for b in BLOCKS}


@pytest.mark.parametrize("block", BLOCKS, ids=[_heading_of(b) for b in BLOCKS])
def test_python_block_runs_as_written(block, tmp_path):
    """Each block alone, in a fresh interpreter and an empty directory, as a reader pastes it."""
    script = tmp_path / "block.py"
    script.write_text(block)
    done = _run([sys.executable, str(script)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip(), "every README block prints what it shows"
    if "bit-exact" in block:
        assert "bit-exact True" in done.stdout
    if "decides like the ANN" in block:
        assert re.search(r"after 32$", done.stdout.strip())


# --------------------------------------------------------------------------- commands and names


def _nox_sessions() -> dict[str, ast.FunctionDef]:
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    sessions = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and any(
            "nox.session" in ast.unparse(d) for d in node.decorator_list
        ):
            sessions[node.name] = node
    return sessions


def test_nox_sessions_named_in_the_readme_and_ci_exist():
    sessions = _nox_sessions()
    ci = (ROOT / ".ci" / "run").read_text()
    named = set(re.findall(r"nox -s (\w+)", README + ci))
    assert {"demo", "tests", "tutorials"} <= named
    assert named <= set(sessions)
    assert "nox -s tests" in ci  # CI runs the README's test command


def test_the_readme_opens_with_the_demo_and_the_test_commands():
    first = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    assert "nox -s demo" in first.splitlines()[0]
    assert "nox -s tests" in first.splitlines()[1]


def test_nox_sessions_are_never_pinned_to_a_missing_interpreter():
    """No session names a Python version: each runs on the interpreter that runs nox."""
    source = (ROOT / "noxfile.py").read_text()
    assert "nox.options.error_on_missing_interpreters = True" in source
    for name, node in _nox_sessions().items():
        for decorator in node.decorator_list:
            text = ast.unparse(decorator)
            assert "python=" not in text or "python=False" in text, (name, text)


def test_nox_fails_loudly_on_a_missing_interpreter(tmp_path):
    """`--force-python` with an interpreter that does not exist: an error, never 'skipped'."""
    pytest.importorskip("nox")
    done = _run([sys.executable, "-m", "nox", "-f", str(ROOT / "noxfile.py"), "-s", "lint",
                 "--force-python", "2.7", "--envdir", str(tmp_path / "envs"),
                 "--download-python", "never"], ROOT, timeout=120)
    assert done.returncode != 0, done.stdout + done.stderr
    assert "not found" in done.stdout + done.stderr


def _extras() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]")[1].split("\n[")[0]
    return set(re.findall(r"^([\w-]+) = \[", section, re.M))


def test_extras_named_in_the_readme_exist():
    extras = _extras()
    named = set(re.findall(r"\.\[(\w+)\]", README))
    named |= set(re.findall(r"^\| `(\w+)` \|", _section("Install"), re.M))
    assert {"data", "demo", "tutorials", "nir", "test", "dev"} <= named
    assert named <= extras


def test_the_dev_extra_brings_every_other_user_extra():
    text = (ROOT / "pyproject.toml").read_text()
    dev = re.search(r"^dev = \[(.*)\]", text, re.M).group(1)
    assert all(extra in dev for extra in ("test", "demo", "tutorials", "nir"))
    assert 'snntorch-weighted = "snntorch_weighted.cli:main"' in text


def test_demo_options_named_in_the_readme_exist():
    from snntorch_weighted import cli

    options = {s for a in cli.build_parser()._actions for s in a.option_strings}
    named = set(re.findall(r"(--[a-z][a-z-]+)", _section("Demo")))
    assert {"--help", "--quiet", "--out", "--data-root", "--download"} <= named
    assert named <= options


def test_tutorial_runner_options_named_in_the_readme_exist(tmp_path):
    named = set(re.findall(r"(--[a-z][a-z-]+)", _section("Tutorials")))
    assert "--output-dir" in named
    done = _run([sys.executable, str(ROOT / "tutorials" / "execute.py"), "--help"], tmp_path)
    assert done.returncode == 0
    assert named <= set(re.findall(r"(--[a-z][a-z-]+)", done.stdout))


def _slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_relative_links_and_anchors_exist():
    links = re.findall(r"\]\(([^)\s]+)\)", README)
    anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", README, re.M)}
    checked = 0
    for link in links:
        if link.startswith(("http://", "https://")):
            continue
        path, _, anchor = link.partition("#")
        if path:
            assert (ROOT / path).exists(), link
        elif anchor:
            assert anchor in anchors, link
        checked += 1
    assert checked >= 8


def test_the_speed_paragraph_is_a_link():
    assert "clock.quick_steps" not in README
    assert "docs/speed_history.md" in README


# --------------------------------------------------------------------------- executed tutorials


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "tutorials").glob("*.ipynb")))
def test_executed_tutorial_is_kept_small_with_outputs_and_a_headline(name):
    source = ROOT / "tutorials" / name
    executed = ROOT / "tutorials" / "executed" / name
    assert f"tutorials/executed/{name}" in README
    assert executed.stat().st_size < 400_000
    nb = json.loads(executed.read_text())
    assert len(nb["cells"]) == len(json.loads(source.read_text())["cells"])
    outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    text = "".join("".join(o.get("text", "")) for o in outputs if o["output_type"] == "stream")
    assert len(re.findall(r"^HEADLINE: ", text, re.M)) == 1
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert not [o for o in outputs if o["output_type"] == "error"]
    # the committed notebooks stay without outputs
    assert not any(c.get("outputs") for c in json.loads(source.read_text())["cells"])
