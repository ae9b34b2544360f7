"""bench/convergence.py end to end at --smoke size: every method builds, trains and evaluates, and the reports are
written. Numbers are only checked to be finite: a few steps at tiny sizes say nothing about convergence."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "convergence.py"


@pytest.fixture(scope="module")
def convergence():
    spec = importlib.util.spec_from_file_location("bench_convergence", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_convergence"] = module
    spec.loader.exec_module(module)
    return module


def test_steps_saved_rule(convergence):
    curve = [(0, 5.0), (10, 3.0), (20, 2.0)]
    assert convergence.steps_to_reach(curve, 4.0) == 5.0  # interpolated between evaluations
    assert convergence.saved(curve, 4.0, 20) == (0.75, "75%")
    assert convergence.saved(curve, 6.0, 20) == (1.0, ">=100% (starts below)")
    assert convergence.saved(curve, 1.0, 20) == (None, "not reached (<0%)")


def test_a_late_spike_of_random_init_does_not_lower_the_bar(convergence):
    family = {"budget": {"steps": 20}, "methods": {"random": {"curve": [(0, 9.0), (10, 4.0), (20, 7.0)]},
                                                   "other": {"curve": [(0, 9.0), (10, 5.0), (20, 4.5)]}}}
    scored = convergence.score(family)
    assert scored["target_loss"] == 4.0  # not the spiked final 7.0
    assert scored["methods"]["random"]["saved_text"] == "50%"
    assert scored["methods"]["other"]["saved_text"] == "not reached (<0%)"


def test_smoke_run_produces_finite_numbers_and_reports(convergence, minilm_dir, tmp_path):
    out = tmp_path / "out"
    code = convergence.main(["--smoke", "--threads", "1", "--out", str(out), "--json", str(tmp_path / "r.json")])
    assert code == 0
    result = json.loads((tmp_path / "r.json").read_text())
    families = {f["task"]: f for f in result["families"]}
    assert set(families) == {"bert-l2s", "bert-s2l"}
    expected = {"bert-l2s": {"random", "dct", "select"}, "bert-s2l": {"random", "dct", "duplicate"}}
    for name, family in families.items():
        ran = {m for m, r in family["methods"].items() if "curve" in r}
        assert expected[name] <= ran, family["methods"]
        for method in ran:
            curve = family["methods"][method]["curve"]
            assert [s for s, _ in curve] == [0, 2, 4]
            assert all(math.isfinite(loss) for _, loss in curve), (name, method, curve)
        assert math.isfinite(family["target_loss"])
        png = out / f"convergence-{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "results.md").read_text()
    assert "| method | bert-l2s | bert-s2l |" in text and "python bench/convergence.py --smoke" in text
