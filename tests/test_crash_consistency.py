"""``kill -9`` at any instant: training resumes to the uninterrupted result bit for bit, and an export
folder holds the old set of files or the new one, never a mix (issue: crash consistency)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from defr.model import create_model, save_checkpoint
from defr.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}

# A child process that runs ``call`` and, with a ``kill_at`` hook, SIGKILLs itself at that exact point.
CHILD = """
import json, os, signal, sys
args = json.loads(sys.argv[1])
if args["what"] == "train":
    import defr.train as t
    if args.get("kill_between_writes"):  # after train_state.pt of that epoch, before model.safetensors
        publish = t._publish
        def killing_publish(out, model, state):
            if state["epoch"] == args["kill_between_writes"]:
                os.kill(os.getpid(), signal.SIGKILL)
            publish(out, model, state)
        t._publish = killing_publish
    t.train(t.TrainConfig(**args["config"]), resume=args["resume"])
else:
    import defr.export.exporter as e
    if args.get("kill_after_swap"):  # the new folder is in place, the old one not yet removed
        from defr import files
        def killing_replace(new, target):
            files._exchange(new, target)
            os.kill(os.getpid(), signal.SIGKILL)
        e.replace_dir = killing_replace
    e.export_model(args["checkpoint"], args["out"], e.ExportConfig(verify=False), log=lambda m: None)
"""


def _child(args: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args)], env=ENV, cwd=REPO)


def _run_and_kill(args: dict, delay: float) -> int:
    """Start the child, SIGKILL it after ``delay`` s (if still running); its return code."""
    proc = _child(args)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return proc.returncode


# --- training --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    from defr.data import generate_synthetic

    return generate_synthetic(tmp_path_factory.mktemp("synth") / "data", images=32, seed=4, size=48)


def _config(root: Path, out: Path) -> TrainConfig:
    return TrainConfig(
        dataset="synth",
        data_root=str(root),
        backbone="tiny-vit",
        init="random",
        epochs=3,
        batch_size=8,
        image_size=32,
        lr=1e-3,
        min_positives=2,
        seed=2,
        output=str(out),
    )


def _resume_until_done(cfg: TrainConfig) -> Path:
    """After a kill: resume when an epoch was completed, else start again (what a user does)."""
    out = Path(cfg.output)
    return train(cfg, resume=(out / "train_state.pt").is_file())


def _same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.slow
def test_training_killed_between_the_two_writes_resumes_bit_exactly(synth_root, tmp_path):
    straight = train(_config(synth_root, tmp_path / "straight"))
    cfg = _config(synth_root, tmp_path / "killed")
    args = {"what": "train", "config": asdict(cfg), "resume": False, "kill_between_writes": 2}
    assert _run_and_kill(args, delay=600) == -signal.SIGKILL
    out = tmp_path / "killed"
    state = torch.load(out / "train_state.pt", weights_only=True)
    published = json.loads(json.loads(_header(out / "model.safetensors"))["metadata"])
    assert (state["epoch"], published["epoch"]) == (2, 1)  # the window the issue found: a mixed pair
    assert _same_weights(straight, train(cfg, resume=True))


@pytest.mark.slow
def test_training_killed_at_random_instants_resumes_bit_exactly(synth_root, tmp_path):
    started = time.perf_counter()
    straight = train(_config(synth_root, tmp_path / "straight"))
    duration = time.perf_counter() - started
    rng = random.Random(7)
    for k in range(3):
        cfg = _config(synth_root, tmp_path / f"killed{k}")
        # a child also pays interpreter and import time: spread the kills over its whole run
        _run_and_kill({"what": "train", "config": asdict(cfg), "resume": False}, rng.uniform(1.0, 2.0 * duration + 4))
        assert _same_weights(straight, _resume_until_done(cfg)), f"kill {k}"


def _header(path: Path) -> str:
    """The JSON metadata of a safetensors file (its header, without reading tensors)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.dumps(f.metadata())


# --- export ----------------------------------------------------------------------------------------------------


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _export_state(out: Path) -> str | None:
    """Which checkpoint the export in ``out`` is of (its SHA-256), after checking that every file
    model.json lists is there with its checksum; None when ``out`` has no export."""
    if not (out / "model.json").is_file():
        assert not any(out.glob("model*.onnx")) if out.exists() else True, "ONNX files without their sidecar"
        return None
    sidecar = json.loads((out / "model.json").read_text())
    for name, entry in sidecar["files"].items():
        assert _sha(out / name) == entry["sha256"], f"{name} does not belong to model.json: a mixed export"
    return sidecar["source"]["sha256"]


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    old, new = root / "old.safetensors", root / "new.safetensors"
    save_checkpoint(create_model("tiny-vit", 32, seed=1), old)
    save_checkpoint(create_model("tiny-vit", 32, seed=2), new)
    return old, new


@pytest.mark.slow
def test_export_killed_at_random_instants_leaves_the_old_or_the_new_set(two_checkpoints, tmp_path):
    old, new = two_checkpoints
    out = tmp_path / "export"
    (out).mkdir()
    (out / "notes.txt").write_text("mine")  # a file of the user's survives every export
    started = time.perf_counter()
    assert _run_and_kill({"what": "export", "checkpoint": str(old), "out": str(out)}, delay=600) == 0
    duration = time.perf_counter() - started
    states = {_sha(old): "old", _sha(new): "new"}
    seen = []
    rng = random.Random(3)
    for delay in [rng.uniform(0.5, duration) for _ in range(3)]:
        _run_and_kill({"what": "export", "checkpoint": str(new), "out": str(out)}, delay)
        seen.append(states[_export_state(out)])
        assert (out / "notes.txt").read_text() == "mine"
    args = {"what": "export", "checkpoint": str(new), "out": str(out), "kill_after_swap": True}
    assert _run_and_kill(args, delay=600) == -signal.SIGKILL
    assert states[_export_state(out)] == "new" and (out / "notes.txt").read_text() == "mine"
    leftovers = list(tmp_path.glob(".export.export-*"))
    assert leftovers  # the killed runs left staging folders (one holds the old set)
    assert _run_and_kill({"what": "export", "checkpoint": str(old), "out": str(out)}, delay=600) == 0
    assert states[_export_state(out)] == "old"
    assert list(tmp_path.glob(".export.export-*")) == []  # stale staging folders of dead runs are removed
    print("states after random kills:", seen)
