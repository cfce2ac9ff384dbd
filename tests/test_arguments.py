"""Arguments and configs refused up front, in one line naming the value (issue 28, item 9)."""

from __future__ import annotations

import re

import pytest
import torch
from click.testing import CliRunner

from defr.cli import main
from defr.errors import ConfigError
from defr.machine import check_device, check_seed
from defr.train import TrainConfig, distributed_env, load_config


def _refused(args: list[str], *needles: str) -> str:
    r = CliRunner().invoke(main, args)
    assert r.exit_code != 0 and "Traceback" not in r.output, r.output
    for needle in needles:
        assert needle in r.output, r.output
    return r.output


@pytest.mark.slow  # imports every command's modules
def test_devices_are_checked_before_anything_is_built():
    with pytest.raises(ConfigError, match="device 'banana' is not a device"):
        check_device("banana")
    with pytest.raises(ConfigError, match="device 'meta' is not supported"):
        check_device("meta")
    assert check_device("cpu") == "cpu" and check_device("auto", allow_auto=True) == "auto"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device 'cuda': CUDA is not available"):
            check_device("cuda")
    commands = (
        ["bench", "--model", "tiny-vit"],
        ["video", "x.mp4", "--checkpoint", "c"],
        ["detect", "--checkpoint", "c", "--images", "i", "--detections", "d", "--out", "o.json"],
        ["box-noise", "--checkpoint", "c", "--annotations", "a", "--images", "i", "--out", "o"],
    )
    for command in commands:
        _refused([command[0], "--device", "banana", *command[1:]], "device 'banana' is not a device")
    _refused(["train", "--device", "banana"], "device 'banana'")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_refused_by_every_command():
    _refused(["bench", "--model", "tiny-vit", "--device", "cuda"], "CUDA is not available")
    _refused(["train", "--device", "cuda:0"], "CUDA is not available")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        TrainConfig(device="cuda")


@pytest.mark.parametrize("seed", ["-1", str(2**70)])
def test_seeds_outside_numpy_range_are_refused(tmp_path, seed):
    _refused(["synth", str(tmp_path / "s"), "--seed", seed], "--seed", seed)
    _refused(["train", "--seed", seed, "--output", str(tmp_path / "run")], "--seed")
    with pytest.raises(ConfigError, match="seed must be an integer in"):
        check_seed(int(seed))
    assert not (tmp_path / "s").exists() and not (tmp_path / "run").exists()


def test_train_refuses_bad_numbers_before_taking_the_lock(tmp_path):
    _refused(["train", "--lr", "nan", "--output", str(tmp_path / "run")], "'nan' is not a finite number")
    _refused(["train", "--workers", "-1", "--output", str(tmp_path / "run")], "--workers", "-1")
    assert not (tmp_path / "run").exists()  # no train.lock left behind
    with pytest.raises(ConfigError, match="lr must be a finite number > 0, got inf"):
        TrainConfig(lr=float("inf"))
    with pytest.raises(ConfigError, match=r"workers must be in \[0, 256\], got -1"):
        TrainConfig(workers=-1)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--size", "0"], "--size"),
        (["--size", "50000"], "--size"),
        (["--video", "v.mp4", "--frames", "100000000"], "--frames"),
        (["--video", "v.mp4", "--fps", "1e-9"], "--fps"),
    ],
)
def test_synth_sizes_and_rates_are_bounded(tmp_path, args, needle):
    _refused(["synth", str(tmp_path / "s"), *args], needle)
    assert not (tmp_path / "s").exists()


def test_video_fps_and_bench_sizes_are_bounded():
    _refused(["video", "frames/", "--checkpoint", "c", "--fps", "1e-320"], "--fps")
    _refused(["bench", "--model", "tiny-vit", "--threads", "100000"], "--threads")
    _refused(["bench", "--model", "tiny-vit", "--pairs", "100000", "--batch", "64"], "6400000 pairs in one call")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (b'epochs: "3"\n', "TrainConfig.epochs must be int, got '3'"),
        (b"data_root: 5\n", "TrainConfig.data_root must be str, got 5"),
        (b"image_size: [64]\n", "TrainConfig.image_size must be int, got [64]"),
        (b"output: \xff\xfe\n", "c.yaml': not UTF-8 text (byte 8)"),
    ],
)
def test_yaml_configs_of_wrong_types_are_refused(tmp_path, text, needle):
    path = tmp_path / "c.yaml"
    path.write_bytes(text)
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_config(str(path), {})
    _refused(["train", "--config", str(path), "--output", str(tmp_path / "run")], needle)


# Round-5 probe: each of these gave a traceback (TypeError, RecursionError, ValueError), a hang (the repr of a
# billion list items that YAML aliases make of ten lines) or a silent choice (the last of two keys).
ALIASES = (
    "backbone: ["
    + ", ".join(f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10 if i else ["x"] * 10) + "]" for i in range(9))
    + "]\n"
)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (b"dataset: synth\n1: 2\nzz: 3\n", "c.yaml': unknown keys ['zz', 1]"),
        (b"dataset: " + b"[" * 100000 + b"]" * 100000 + b"\n", "c.yaml': not valid YAML (nested too deeply)"),
        (b"seed: " + b"9" * 5000 + b"\n", "c.yaml': not valid YAML (Exceeds the limit (4300 digits)"),
        (b"epochs: 1\nepochs: 5\n", "c.yaml': not valid YAML (key 'epochs' appears twice in one mapping"),
        (ALIASES.encode(), "TrainConfig.backbone must be str, got [['x', 'x', 'x', 'x', ...], [[...],"),
        (b"dataset: !!python/object/apply:os.system [ls]\n", "could not determine a constructor for the tag"),
    ],
)
def test_hostile_yaml_configs_are_one_line(tmp_path, text, needle):
    path = tmp_path / "c.yaml"
    path.write_bytes(text)
    with pytest.raises(ConfigError, match=re.escape(needle)) as refused:
        load_config(str(path), {})
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 400


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"WORLD_SIZE": "junk"}, "WORLD_SIZE='junk' is not a whole number"),
        ({"WORLD_SIZE": "2"}, "WORLD_SIZE=2 without RANK"),
        ({"RANK": "junk"}, "RANK='junk' is not a whole number"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2 must be below WORLD_SIZE=2"),
    ],
)
def test_distributed_variables_are_checked_at_start(tmp_path, monkeypatch, env, needle):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=needle):
        distributed_env()
    _refused(["train", "--output", str(tmp_path / "run")], needle)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["eval-events", "--frames", "in/f", "--events", "in/f", "--truth-detections", "in/f", "--events-truth", "in/f"]
        + ["--out"],
        ["box-noise", "--checkpoint", "in/f", "--annotations", "in/f", "--images", "in", "--out"],
        ["synth"],
        ["train", "--output"],
    ],
)
def test_an_empty_output_folder_is_refused_not_taken_as_the_current_one(tmp_path, monkeypatch, args):
    """Round-5 probe: ``eval-events --out ''`` wrote its three files into the current folder (click reads '' as
    '.'); an unset shell variable does that."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "f").write_text("{}\n")
    r = CliRunner().invoke(main, [*args, ""])
    assert r.exit_code == 2 and "is empty: give a folder (. for the current one)" in r.output, r.output
    assert [p.name for p in tmp_path.iterdir()] == ["in"]
