"""``benchmarks/throughput.py --dry-run``: every layout of both runtimes answers images in the documented schema,
OpenVINO's picks are recorded, and ``benchmarks/tables.py`` renders it."""

from __future__ import annotations

import importlib.util

import pytest
from benchkit import load_benchmark


@pytest.mark.slow
def test_dry_run_measures_every_layout_of_both_runtimes(tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime.quantization")
    files = ["fp32", "int8"] + (["int8 nncf"] if importlib.util.find_spec("nncf") else [])
    out = tmp_path / "throughput.json"
    report = load_benchmark("throughput").main(["--dry-run", "--files", *files, "--out", str(out)])
    assert out.is_file() and report["backbone"] == "tiny-vit" and report["cores"] == [1]
    assert report["fp32_floor"]["1"]["gflop_per_s"] > 0 and len(report["loadavg"]) == 2
    for file in files:
        modes = {x["mode"]: x for x in report["rows"] if x["file"] == file}
        assert set(modes) == {
            "1 session, threads=1",
            "latency",
            "throughput",
            "throughput, async queue",
            "streams=1",
            "streams=2",
        }
        for x in modes.values():
            assert x["images_per_s"] > 0 and x["calls"] >= 2 and x["median_ms"] <= x["p90_ms"]
            assert x["fraction_of_fp32_floor"] == pytest.approx(
                x["images_per_s"] * x["gflop_per_image"] / report["fp32_floor"]["1"]["gflop_per_s"]
            )
        # OpenVINO's own picks: at one thread it runs one stream, whatever the sweep asks
        assert modes["throughput"]["streams"] == 1 and modes["streams=2"]["ov_threads"] == 1
    table = load_benchmark("tables").table(out)
    assert "| 1 | 1 | int8 | openvino | throughput, async queue | 1 / 1 |" in table
    # the best-layout table: ONNX Runtime fp32's one caller is its own baseline
    base = "| 1 | 1 | fp32 | onnxruntime | 1 session, threads=1 | "
    assert any(line.startswith(base) and line.endswith("| 1.00× | 1.00× |") for line in table.splitlines())


def test_more_cores_than_the_process_may_use_stop_in_one_line(capsys):
    with pytest.raises(SystemExit):
        load_benchmark("throughput").parse(["--cores", "4096", "--out", "x.json"])
    assert "--cores 4096: this process may run on" in capsys.readouterr().err
