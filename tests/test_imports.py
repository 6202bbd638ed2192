"""Product code and benchmarks stand without the test suite: none of them imports ``tests``,
whether with an import statement or by running ``python -m tests.x`` in a child process."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_MODULE = re.compile(r"^tests(\.\w+)+$")


def uses_of_tests(source: str) -> list[str]:
    """Every absolute import of ``tests`` and every string naming a module under it."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] == "tests"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "tests":
            found.append(node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and TEST_MODULE.match(node.value):
            found.append(node.value)
    return found


def test_uses_of_tests_sees_every_form():
    src = ('import tests.x\nfrom tests import y\nfrom .tests import z\nimport numpy as np\n'
           'run(["python", "-m", "tests.daemon_helpers"])\nprint("tests pass")\n')
    assert uses_of_tests(src) == ["tests.x", "tests", "tests.daemon_helpers"]


def test_no_product_or_benchmark_module_uses_tests():
    offenders = {
        str(path.relative_to(ROOT)): found
        for folder in ("device", "train", "convert", "benchmarks")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if (found := uses_of_tests(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}
