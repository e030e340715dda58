"""Running an example script as users do, and reading its summary: shared by the tests of
examples/ (test_examples.py, test_examples_http.py, test_examples_quotas.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(
    script: str, *args: str, cwd: Path, status: int = 0, env: dict[str, str] | None = None
) -> str:
    """Run examples/`script` with `args` from `cwd` (a foreign working directory); check its
    exit status, and that a successful run printed no traceback. Returns stdout, then stderr."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert done.returncode == status, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    if status == 0:
        assert "Traceback" not in done.stderr, done.stderr
    return done.stdout + done.stderr


def summary(output: str) -> dict[str, str]:
    """The `  label   value` lines after "summary", by label."""
    _, found, tail = output.partition("\nsummary")
    assert found, output
    lines = (re.fullmatch(r"  (\S.*?)\s{2,}(\S.*)", line) for line in tail.splitlines())
    return {m[1]: m[2] for m in lines if m}


def number(text: str) -> float:
    """The number `text` starts with: "20 arrivals (limit 20)" -> 20.0."""
    match = re.match(r"\d+(?:\.\d+)?", text)
    assert match, text
    return float(match[0])


def numbers(text: str) -> list[float]:
    """Every number in `text`, in order."""
    return [float(n) for n in re.findall(r"\d+(?:\.\d+)?", text)]
