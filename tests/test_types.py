"""zoo's annotations hold (mypy over zoo/, with pyproject.toml's [tool.mypy] settings), and zoo.hookspecs.Register
makes a type checker check what a plugin registers against the protocols."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="mypy is in the [test] extra: pip install -e '.[test]'")

ROOT = Path(__file__).resolve().parents[1]


def mypy(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "mypy", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=env)


def test_zoo_type_checks():
    result = mypy()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_no_zoo_module_is_exempt():
    # an ignore_errors override would pass test_zoo_type_checks while checking nothing in those modules
    import tomllib

    overrides = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"].get("overrides", [])
    exempt = [o["module"] for o in overrides if o.get("ignore_errors") and "zoo" in str(o["module"])]
    assert exempt == []


def test_register_checks_what_a_plugin_registers(tmp_path):
    plugin = tmp_path / "zoo_typed_plugin.py"
    plugin.write_text(textwrap.dedent("""
        from __future__ import annotations

        from typing import Any

        import zoo
        from zoo.hookspecs import Register
        from zoo.transforms import Transform


        class Identity:
            name = "identity"
            description = "keeps every value"

            def analyze(self, x: Any, dim: int, keep: int, **params: Any) -> Any:
                return x

            def synthesize(self, coeffs: Any, dim: int, size: int, **params: Any) -> Any:
                return coeffs


        class OneWay:
            name = "one-way"
            description = "cannot go back"

            def analyze(self, x: Any, dim: int, keep: int, **params: Any) -> Any:
                return x


        @zoo.hookimpl
        def register_transforms(register: Register[Transform]) -> None:
            register(Identity())
            register(Identity(), replace=True)
            register(OneWay())
    """))
    result = mypy("--cache-dir", str(tmp_path / "cache"), str(plugin))
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1 and '"OneWay"' in errors[0] and '"Transform"' in errors[0], result.stdout
    assert "synthesize" in result.stdout
