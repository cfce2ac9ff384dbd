"""``benchmarks/op_profile.py --dry-run``: both runtimes' per-op-group times on a tiny model, in the documented
schema, and the table ``benchmarks/tables.py`` makes of it."""

from __future__ import annotations

import pytest
from benchkit import load_benchmark

GROUPS = {"linear", "attention", "conv", "softmax", "layernorm", "gelu", "other"}


@pytest.mark.slow
def test_dry_run_profiles_both_runtimes(tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime.quantization")
    out = tmp_path / "op.json"
    report = load_benchmark("op_profile").main(["--dry-run", "--out", str(out)])
    assert out.is_file() and report["backbone"] == "tiny-vit" and report["threads"] == 1
    assert report["fp32_floor"]["gflop_per_s"] > 0  # the yardstick of the "% of fp32 floor" column
    for runtime in ("onnxruntime", "openvino"):
        for precision in ("fp32", "int8"):
            p = report[runtime][precision]
            assert p["kernel_ms"] > 0 and set(p["by_kind"]) <= GROUPS and "linear" in p["by_kind"]
            assert sum(v["share"] for v in p["by_kind"].values()) == pytest.approx(1.0)
            # the blocks' matrix products: FLOPs known from the shapes, so a rate
            assert p["by_kind"]["linear"]["gflop"] > 0 and p["by_kind"]["linear"]["gflop_per_s"] > 0
    table = load_benchmark("tables").table(out)
    assert "| openvino | int8 | linear |" in table and "| onnxruntime | fp32 | **all** |" in table
    assert "| % of fp32 floor |" in table and "fp32 GEMM floor: " in table
