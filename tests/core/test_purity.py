"""The core is sans-I/O: no event loop, sockets, clocks, threads or global randomness."""

from __future__ import annotations

import ast
from pathlib import Path

import pyraft.core

CORE_DIR = Path(pyraft.core.__file__).parent
FORBIDDEN_MODULES = {"trio", "socket", "time", "threading", "asyncio", "selectors", "os", "subprocess"}
# Module-level functions of ``random`` share one hidden global generator.
RANDOM_ALLOWED = {"Random"}


def core_modules() -> list[Path]:
    files = sorted(CORE_DIR.rglob("*.py"))
    assert {p.name for p in files} >= {"raft.py", "log.py", "progress.py", "messages.py", "ready.py"}
    return files


def violations(source: str) -> list[str]:
    found: list[str] = []
    tree = ast.parse(source)
    random_aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in FORBIDDEN_MODULES:
                    found.append(f"import {alias.name}")
                if alias.name == "random":
                    random_aliases.add(alias.asname or "random")
        elif isinstance(node, ast.ImportFrom):
            top = (node.module or "").split(".")[0]
            if top in FORBIDDEN_MODULES:
                found.append(f"from {node.module} import ...")
            if node.module == "random":
                for alias in node.names:
                    if alias.name not in RANDOM_ALLOWED:
                        found.append(f"from random import {alias.name}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
            found.append("__import__(...)")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in random_aliases
            and node.attr not in RANDOM_ALLOWED
        ):
            found.append(f"random.{node.attr}")
    return found


def test_core_imports_no_io_clock_thread_or_global_random() -> None:
    problems = {p.name: v for p in core_modules() if (v := violations(p.read_text()))}
    assert problems == {}


def test_checker_catches_what_it_should() -> None:
    bad = (
        "import time\nimport random\nfrom trio import sleep\nx = random.random()\nfrom random import choice\n"
    )
    assert violations(bad) == [
        "import time",
        "from trio import ...",
        "from random import choice",
        "random.random",
    ]
    assert violations("import random\nr = random.Random(1)\n") == []
