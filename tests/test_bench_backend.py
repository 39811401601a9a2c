"""benchmarks/bench_backend.py runs end to end at a tiny budget and writes what it reports."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "bench_backend.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_backend", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_reports_timing_memory_zip_and_unavailable_variants(bench, tmp_path, monkeypatch):
    args = "--env Pendulum-v1 --algos td3 --widths 8 --steps 4 --repeats 2 --learning-starts 40 --warmup 4"
    variants = ["dense", "masked 90%", "masked 95%"]  # 95% is out of reach at width 8: the dense output layers hold > 5%
    kinds = ["--timing", "--predict", "--memory", "--zip"]
    argv = [str(SCRIPT), *args.split(), *kinds, "--out", str(tmp_path), "--variants", *variants]
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    (path,) = tmp_path.glob("timing_predict_memory_zip_*.json")
    result = json.loads(path.read_text())["results"]["td3 Pendulum-v1 8-8"]
    assert set(result["unavailable"]) == {"masked 95%"} and "sparsity=0.95" in result["unavailable"]["masked 95%"]
    assert set(result["timing"]) == {"dense", "masked 90%"}
    assert result["timing"]["dense"]["speedup"] == 1.0 and len(result["timing"]["masked 90%"]["s_per_step_by_round"]) == 2
    assert set(result["predict"]) == {"dense", "masked 90%"} and result["predict"]["masked 90%"]["ms_per_step"] > 0
    memory = result["memory_bytes"]
    assert memory["dense"]["buffers"] == 0 and memory["masked 90%"]["buffers"] > 0  # the float masks
    assert memory["masked 90%"]["parameters"] == memory["dense"]["parameters"]
    assert memory["dense"]["optimizer_state"] == memory["dense"]["parameters"]  # TD3: Adam's two moments, online only
    zips = result["zip_bytes"]
    assert zips["dense"]["trained"] > zips["dense"]["fresh"]  # the optimizer state
    masked = zips["masked 90%"]
    assert masked["fresh_vs_dense"] == pytest.approx(masked["fresh"] / zips["dense"]["fresh"])


def test_refuses_a_run_without_the_dense_reference(bench, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--variants", "masked 90%"])
    with pytest.raises(SystemExit):
        bench.main()
