"""``benchmarks/gpu_check.py --dry-run``: the GPU check runs end to end on a CPU, so it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_vit_b16_flops_match_the_design_card():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from gpu_check import vit_b16, vit_flops
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    assert vit_flops(vit_b16(672).cfg.backbone.vit) / 1e9 == pytest.approx(415, abs=1)  # DESIGN.md §4


@pytest.mark.slow
def test_dry_run_writes_the_report(tmp_path):
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(tmp_path)]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry_run"] is True and report["sanitizer"]["ran"] is False
    assert {(r["dtype"], r["mask_mode"]) for r in report["kernel"]} == {
        (d, m) for d in ("float32", "float16", "bfloat16") for m in ("hard", "released")
    }
    assert all(r["passed"] for r in report["kernel"]), report["kernel"]
    paths = {r["path"] for r in report["timings"]}
    assert paths == {"backbone", "runtime/reference", "runtime/kernel"}
    assert all(r["ms"] > 0 for r in report["timings"])
    assert report["released"]["ratio"] > 0
