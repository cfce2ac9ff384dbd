"""``benchmarks/tables.py`` and ``benchmarks/matmul.py``: the docs' tables are what their result files say."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from benchkit import load_benchmark

REPO = Path(__file__).resolve().parents[1]


def test_docs_tables_are_in_step_with_their_result_files(tmp_path, monkeypatch):
    """Regenerating every ``<!-- benchmarks/results/... -->`` block of docs/benchmarks.md changes nothing: no
    number in the docs' tables was typed in or left behind by a newer run."""
    tables = load_benchmark("tables")
    doc = tmp_path / "benchmarks.md"
    shutil.copy(REPO / "docs" / "benchmarks.md", doc)
    monkeypatch.chdir(REPO)  # the blocks name their files relative to the repository
    tables.update(doc)
    assert doc.read_text() == (REPO / "docs" / "benchmarks.md").read_text()


@pytest.mark.parametrize("bf16", [True, False])
def test_bf16_rows_get_a_bf16_floor_only_on_a_cpu_with_bf16(tmp_path, bf16):
    matmul = load_benchmark("matmul")
    rows = [{"backend": "openvino", "precision": p, "batch": 1, "pairs": 2, "median_ms": 4.0} for p in ("fp32", "bf16")]
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"config": {"model": "tiny-vit", "image_size": 64, "threads": 1}, "rows": rows}))
    measured = {"1": {"fp32": {"a": 100.0, "b": 50.0}, "bf16": {"a": 800.0}}}
    fp32, bf16_row = matmul.floors([bench], measured, bf16)
    assert fp32["floor_ms"] == pytest.approx(fp32["gflop"] / 100.0 * 1e3)  # the best fp32 rate
    assert fp32["fraction_of_floor"] == pytest.approx(fp32["floor_ms"] / 4.0)
    assert "bf16_floor_ms" not in fp32
    if bf16:
        assert bf16_row["bf16_floor_ms"] == pytest.approx(bf16_row["gflop"] / 800.0 * 1e3)
        assert bf16_row["fraction_of_bf16_floor"] == pytest.approx(bf16_row["bf16_floor_ms"] / 4.0)
    else:
        assert "bf16_floor_ms" not in bf16_row


def test_fp32_floor_reads_the_result_file_only_when_it_is_this_cpus(tmp_path, monkeypatch):
    """``matmul.fp32_floor``: the rate of ``matmul.json`` when it was measured on this CPU; another CPU's file
    (the checked-in one is the earlier Xeon's) is not this machine's floor, so the rate is measured."""
    matmul = load_benchmark("matmul")
    monkeypatch.setattr(matmul, "gemm_rate", lambda m, n, k, dtype, repeats: 7.0)
    result = tmp_path / "matmul.json"
    rates = {"1": {"fp32": {"a": 100.0, "b": 120.0}, "bf16": {"a": 800.0}}}
    result.write_text(json.dumps({"machine": {"cpu": matmul.cpu_name()}, "gflop_per_s": rates}))
    assert matmul.fp32_floor(1, 3, result) == {"gflop_per_s": 120.0, "source": "matmul.json"}
    result.write_text(json.dumps({"machine": {"cpu": "another CPU"}, "gflop_per_s": rates}))
    assert matmul.fp32_floor(1, 3, result)["gflop_per_s"] == 7.0
    assert matmul.fp32_floor(2, 3, tmp_path / "none.json")["gflop_per_s"] == 7.0  # no file: measured
