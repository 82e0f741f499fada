"""The house rules, checked on the source: the import map has no loop and no arrow that runs upward.

Floors, from the ground up (a module may import its own floor's shared modules and any floor below):

0. the contract: ``contracts``, ``registry``, ``deployment`` (stdlib only);
1. shared helpers: ``layout``, ``models``, ``media``, ``embeddings``, ``devices``, ``sentences``, ...;
2. the runner: ``stage``;
3. libraries the stages build on: ``asr/``, ``report/``;
4. the stages (``stages/``) and the training steps (``training/``): no stage imports another stage;
5. tools: ``inbox``, ``doctor``, ``warm_cache``, ``cli``;
6. the DAG bundle's helpers (``dags/konspekt_dags/``), which import no ``asr``/``stages``/``training`` module;
7. the DAG files, which only wire tasks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
CONTRACT = {"konspekt", "konspekt.contracts", "konspekt.registry", "konspekt.deployment"}
RUNNER = {"konspekt.stage"}
TOOLS = {"konspekt.inbox", "konspekt.doctor", "konspekt.docker_api", "konspekt.warm_cache", "konspekt.cli",
         "konspekt.uploads", "konspekt.callbacks", "konspekt.webapi"}  # the HTTP upload API (issue 21)


def floor(module: str) -> int:
    if module in CONTRACT:
        return 0
    if module in RUNNER:
        return 2
    if module.startswith(("konspekt.asr", "konspekt.report")):
        return 3
    if module.startswith(("konspekt.stages", "konspekt.training")):
        return 4
    if module in TOOLS:
        return 5
    if module.startswith("konspekt_dags"):
        return 6
    if module.startswith("dags."):
        return 7
    return 1  # a shared helper of the ground floor


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in sorted((ROOT / "dags").rglob("*.py")):
        parts = path.relative_to(ROOT / "dags").with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name if name.startswith("konspekt_dags") else f"dags.{name}"] = path
    return found


def imports(path: Path, known: dict[str, Path], package: str) -> set[str]:
    """The project modules ``path`` imports, at the top or inside a function (a lazy import still counts)."""
    edges = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            edges |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in known:
                    edges.add(f"{base}.{alias.name}")
                elif base in known:
                    edges.add(base)
    return edges


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    result = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        result[name] = imports(path, known, package) - {name}
    return result


def test_the_map_sees_the_whole_package(graph):
    assert {"konspekt.stage", "konspekt.stages.transcribe", "konspekt.training.train", "konspekt.asr.whisperx",
            "konspekt_dags.factory", "dags.lecture_to_pdf"} <= set(graph)
    assert "konspekt_dags.local_runner" in graph["konspekt_dags.factory"]  # a lazy import (in a function) counts
    assert "konspekt.registry" in graph["dags.lecture_to_pdf"]


def test_no_import_loop(graph):
    seen, on_path, loops = set(), [], []

    def visit(node: str) -> None:
        if node in on_path:
            loops.append(on_path[on_path.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        on_path.append(node)
        for target in sorted(graph.get(node, ())):
            visit(target)
        on_path.pop()

    for node in sorted(graph):
        visit(node)
    assert loops == []


def test_no_arrow_runs_upward_or_sideways(graph):
    wrong = []
    for source, targets in graph.items():
        for target in targets:
            up = floor(target) > floor(source)
            # on the same floor only the ground's helpers and a package's own modules may meet
            same_package = (target.rpartition(".")[0] == source.rpartition(".")[0]
                            or source.startswith(target + ".") or target.startswith(source + "."))
            sideways = floor(target) == floor(source) and floor(source) not in (0, 1) and not same_package
            between_stages = source.startswith("konspekt.stages.") and target.startswith("konspekt.stages.")
            if up or sideways or between_stages:
                wrong.append(f"{source} -> {target}")
    assert sorted(wrong) == []


def test_specific_rules_of_issue_16(graph):
    inference = [m for m in graph if m.startswith(("konspekt.asr", "konspekt.stages"))]
    assert not [m for m in inference if any(t.startswith("konspekt.training") for t in graph[m])]
    assert not [m for m in graph if m.startswith("konspekt.asr") and graph[m] & {"konspekt.stage", "konspekt.asr"}]
    dag_side = [m for m in graph if m.startswith(("konspekt_dags", "dags."))]
    heavy = ("konspekt.asr", "konspekt.stages", "konspekt.training", "konspekt.report")
    assert not [(m, t) for m in dag_side for t in graph[m] if t.startswith(heavy)]
    ground = [m for m in graph if floor(m) == 0 and m != "konspekt"]
    assert not [(m, graph[m]) for m in ground if graph[m] - {"konspekt"}]  # the contract imports nothing of ours


def test_the_tests_have_one_conftest():
    """Test modules import helpers from tests/conftest.py by name (``from conftest import airflow_env``);
    a second conftest.py in a subfolder would take that name, and their collection would fail."""
    assert [p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("conftest.py")] == ["tests/conftest.py"]
