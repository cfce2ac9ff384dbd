"""``defr bench``: inputs, timing loop, statistics, the table and JSON, bad arguments."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from defr.bench import BenchConfig, row, time_backend
from defr.cli import main
from defr.export import ExportConfig, export_model
from defr.model import create_model, save_checkpoint
from defr.runtime.contract import example_inputs

pytest.importorskip("onnxruntime")


def test_bench_inputs():
    images, boxes_h, boxes_o, index = example_inputs(64, batch=3, pairs=12)
    assert images.shape == (3, 3, 64, 64) and boxes_h.shape == boxes_o.shape == (12, 4)
    assert index.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    for boxes in (boxes_h, boxes_o):
        assert (boxes[:, 2:] > boxes[:, :2]).all() and boxes.min() >= 0
    assert example_inputs(64, batch=2, pairs=0)[3].numel() == 0


class Recorder:
    """A backend that records the pairs it is called with."""

    def __init__(self, accepts_no_pairs: bool):
        self.accepts_no_pairs = accepts_no_pairs
        self.pairs: list[int] = []

    def __call__(self, images, boxes_h, boxes_o, pair_index):
        self.pairs.append(int(pair_index.shape[0]))
        return torch.zeros(pair_index.shape[0], 5), torch.zeros(images.shape[0], 5)


@pytest.mark.parametrize(("accepts", "expected"), [(True, 0), (False, 1)])
def test_no_pairs_as_the_detector_does(accepts, expected):
    backend = Recorder(accepts)
    times = time_backend(backend, 32, batch=2, pairs=0, warmup=2, repeats=3)
    assert len(times) == 3 and backend.pairs == [expected] * 5


def test_row_statistics():
    times = [0.010, 0.020, 0.030, 0.040, 0.100]
    r = row("torch", "fp32", 4, 16, times)
    assert r.median_ms == pytest.approx(1000 * statistics.median(times))
    assert r.median_ms <= r.p90_ms <= 1000 * max(times)
    assert r.p90_ms == pytest.approx(1000 * float(np.quantile(times, 0.9)))
    assert r.images_per_s == pytest.approx(4 / statistics.median(times))


@pytest.mark.slow
def test_bench_backbone_name_torch_and_onnxruntime(tmp_path):
    out = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    args = ["bench", "--model", "tiny-vit", "--image-size", "64", "--batch", "1,2", "--pairs", "0,3", "--threads", "1"]
    r = CliRunner().invoke(main, [*args, "--warmup", "0", "--repeats", "2", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert torch.get_num_threads() == threads  # restored after the run
    result = json.loads(out.read_text())
    rows = result["rows"]
    keys = [(x["backend"], x["batch"], x["pairs"]) for x in rows]
    assert keys == [(b, n, p) for b in ("torch", "onnxruntime") for n in (1, 2) for p in (0, 3)]
    assert all(x["median_ms"] > 0 and x["p90_ms"] >= x["median_ms"] and x["precision"] == "fp32" for x in rows)
    machine = result["machine"]
    assert machine["cores"] >= 1 and machine["cpu"] and machine["versions"]["torch"]
    assert machine["versions"]["onnxruntime"]
    assert result["config"]["image_size"] == 64 and result["config"]["threads"] == 1
    assert machine["torch_threads"] == 1
    assert "median ms" in r.output and "onnxruntime" in r.output


@pytest.mark.slow
def test_bench_exported_onnx(tmp_path):
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny.safetensors"
    save_checkpoint(create_model("tiny-vit", 64, seed=None), checkpoint)
    export_model(checkpoint, tmp_path / "export", ExportConfig(verify=False), log=lambda m: None)
    out = tmp_path / "bench.json"
    model = str(tmp_path / "export" / "model.fp16.onnx")
    args = ["bench", "--model", model, "--batch", "1", "--pairs", "2", "--warmup", "0", "--repeats", "1"]
    r = CliRunner().invoke(main, [*args, "--json", str(out)])
    assert r.exit_code == 0, r.output
    (only,) = json.loads(out.read_text())["rows"]
    assert (only["backend"], only["precision"], only["batch"], only["pairs"]) == ("onnxruntime", "fp16", 1, 2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "tiny-vit"], "give --image-size"),
        (["--model", "no-such-backbone", "--image-size", "64"], "unknown backbone"),
        (["--model", "tiny-vit", "--image-size", "64", "--batch", "0"], "batch sizes must be >= 1"),
        (["--model", "tiny-vit", "--image-size", "64", "--pairs", "a,b"], "comma-separated integers"),
        (["--model", "tiny-vit", "--image-size", "64", "--backends", "torch,tensorrt"], "backends must be among"),
        (["--model", "tiny-vit", "--image-size", "64", "--threads", "0"], "0 is not in the range 1<=x<=1024"),
    ],
)
def test_bad_arguments(tmp_path, args, message):
    r = CliRunner().invoke(main, ["bench", *args, "--json", str(tmp_path / "b.json")])
    assert r.exit_code != 0 and message in r.output, r.output
    assert not (tmp_path / "b.json").exists()


def test_config_rejects_bad_repeats():
    with pytest.raises(ValueError, match="repeats >= 1"):
        BenchConfig("tiny-vit", 64, repeats=0)


def test_config_bounds_threads_and_pairs_per_call():
    """Issue 28 item 9: --threads 100000 and --pairs 100000 --batch 64 are refused, naming the values."""
    with pytest.raises(ValueError, match=r"threads must be in \[1, 1024\], not 100000"):
        BenchConfig("tiny-vit", 64, threads=100_000)
    with pytest.raises(ValueError, match="batch 64 × pairs 100000 = 6400000 pairs in one call"):
        BenchConfig("tiny-vit", 64, batches=(64,), pairs=(100_000,))
    with pytest.raises(ValueError, match="device 'banana' is not a device"):
        BenchConfig("tiny-vit", 64, device="banana")
