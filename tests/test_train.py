import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from killkit import run_and_kill
from safetensors.torch import load_file

from defr.cli import main
from defr.errors import ConfigError
from defr.train import Distributed, TrainConfig, epoch_indices, load_config, train


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    from defr.data import generate_synthetic

    return generate_synthetic(tmp_path_factory.mktemp("synth") / "data", images=48, seed=3, size=64)


def tiny_config(root: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        dataset="synth",
        data_root=str(root),
        backbone="tiny-vit",
        init="random",
        loss="lse-sign",
        epochs=2,
        batch_size=8,
        image_size=64,
        lr=1e-3,
        min_positives=2,
        output=str(out),
        seed=5,
    )
    return TrainConfig(**{**base, **kw})


@pytest.mark.slow
def test_resume_continues_bit_for_bit(synth_root, tmp_path):
    straight = train(tiny_config(synth_root, tmp_path / "straight"))
    train(tiny_config(synth_root, tmp_path / "resumed", epochs=1))
    resumed = train(tiny_config(synth_root, tmp_path / "resumed"), resume=True)
    a, b = load_file(str(straight)), load_file(str(resumed))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from an uninterrupted run"
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    first = json.loads((tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()[-1])
    assert first["train_loss"] == json.loads(lines[-1])["train_loss"]


@pytest.mark.slow
def test_language_init_and_every_loss_train(synth_root, tmp_path):
    for loss in ("bce", "weighted-bce", "focal"):
        path = train(tiny_config(synth_root, tmp_path / loss, loss=loss, epochs=1))
        assert path.is_file()
    path = train(tiny_config(synth_root, tmp_path / "lang", init="language", text_encoder="minilm", epochs=1))
    record = json.loads((tmp_path / "lang" / "metrics.jsonl").read_text())
    assert np.isfinite(record["train_loss"]) and 0.0 <= record["val_mAP"] <= 1.0
    assert path.is_file()


def test_epoch_indices_oversample_and_shard():
    targets = np.zeros((10, 3), dtype=np.float32)
    targets[:8, 0] = 1
    targets[8, 1] = 1  # a 1-shot class
    cfg = TrainConfig(min_positives=5, seed=1)
    full = epoch_indices(targets, 0, cfg, Distributed())
    assert set(full) == set(range(10)) and full.count(8) >= 5
    shards = [epoch_indices(targets, 0, cfg, Distributed(rank=r, world=2)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == -(-len(full) // 2)
    padded = full + full[: 2 * len(shards[0]) - len(full)]  # wrap-around padding, as np.resize does
    assert sorted(shards[0] + shards[1]) == sorted(padded)
    assert epoch_indices(targets, 1, cfg, Distributed()) != full  # reshuffled each epoch


@pytest.mark.slow
def test_torchrun_two_processes_gloo(synth_root, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "defr",
        "train",
        "--dataset",
        "synth",
        "--data-root",
        str(synth_root),
        "--backbone",
        "tiny-vit",
        "--init",
        "random",
        "--epochs",
        "1",
        "--image-size",
        "64",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--output",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "model.safetensors").is_file()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1  # written by rank 0 only


def test_presets_load_and_overrides_win():
    presets = sorted(p.name for p in resources.files("defr.configs").joinpath("table4").iterdir())
    assert "clip-clip-lse.yaml" in presets and len(presets) == 6
    cfg = load_config("table4/clip-clip-lse", {"epochs": 3})
    assert (cfg.backbone, cfg.loss, cfg.epochs, cfg.learning_rate) == ("ViT-B-16", "lse-sign", 3, 1.5e-5)
    assert load_config("table4/in1k-bert-lse", {}).learning_rate == 1e-4


def test_train_cli_errors(tmp_path, synth_root):
    runner = CliRunner()
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("epochs: 2\nwarp_speed: 9\n")
    result = runner.invoke(main, ["train", "--config", str(bad_yaml)])
    assert result.exit_code != 0 and "unknown keys ['warp_speed']" in result.output
    result = runner.invoke(
        main,
        [
            "train",
            "--dataset",
            "synth",
            "--data-root",
            str(synth_root),
            "--backbone",
            "vit-huge-typo",
            "--init",
            "random",
            "--output",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code != 0 and "unknown backbone 'vit-huge-typo'" in result.output
    result = runner.invoke(
        main,
        ["train", "--dataset", "synth", "--data-root", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o2")],
    )
    assert result.exit_code != 0 and "defr synth" in result.output
    result = runner.invoke(main, ["train", "--resume", "--output", str(tmp_path / "empty")])
    assert result.exit_code != 0 and "no model.safetensors" in result.output


# --------------------------------------------------------------------------- the output folder (issue 18: 3, 17, 21)


def _epochs(out: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _temporaries(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp"))


def test_an_output_holding_a_run_is_refused_without_resume_or_overwrite(synth_root, tmp_path):
    from defr.files import OutputRefused

    out = tmp_path / "run"
    train(tiny_config(synth_root, out, epochs=1))
    (out / "notes.txt").write_text("mine")
    first = (out / "model.safetensors").read_bytes()
    with pytest.raises(OutputRefused, match="holds a training run .*--resume.*--overwrite"):
        train(tiny_config(synth_root, out, epochs=1))
    assert (out / "model.safetensors").read_bytes() == first and _epochs(out) == [1]
    result = CliRunner().invoke(
        main, ["train", "--dataset", "synth", "--data-root", str(synth_root), "--output", str(out)]
    )
    assert result.exit_code == 1 and "holds a training run" in result.output and "Traceback" not in result.output
    train(tiny_config(synth_root, out, epochs=1, seed=9), overwrite=True)
    assert _epochs(out) == [1]  # replaced, not a second epoch-1 line
    assert (out / "model.safetensors").read_bytes() != first
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own files are replaced
    with pytest.raises(ValueError, match="not both"):
        train(tiny_config(synth_root, out), resume=True, overwrite=True)


def test_a_second_run_into_one_output_names_the_holder_and_a_dead_holder_is_taken_over(synth_root, tmp_path):
    """The run's files are claimed on the output seam (stream-style, the manifest in the run folder): a live
    claim refuses the second run, naming its pid; the claim a killed run left is taken over, and the files
    are recorded as defr's."""
    from defr.files import MANIFEST, MANIFEST_FORMAT, OutputRefused
    from defr.train import RUN_FILES, claim_output

    out = tmp_path / "run"
    busy = rf"train_state.pt is being written by another defr process \(pid {os.getpid()}\)"
    with claim_output(out), pytest.raises(OutputRefused, match=busy):
        train(tiny_config(synth_root, out, epochs=1))
    assert not (out / "model.safetensors").exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    claimed = {"pid": int(dead.stdout), "state": "writing", "files": dict.fromkeys(RUN_FILES)}
    (out / MANIFEST).write_text(json.dumps({"format": MANIFEST_FORMAT, "sets": {"killed": claimed}}))  # a killed run's
    train(tiny_config(synth_root, out, epochs=1))
    assert _epochs(out) == [1] and not (out / "train.lock").exists()
    manifest = json.loads((out / MANIFEST).read_text())
    assert set(manifest["files"]) == set(RUN_FILES) and [s["state"] for s in manifest["sets"].values()] == ["complete"]


@pytest.mark.slow
def test_a_full_disk_stops_training_in_one_line_and_the_last_epoch_resumes(synth_root, tmp_path, monkeypatch):
    """Issue 28 #10: the real torch.save on a disk that fills up while epoch 2's state is written (torch alone
    turns the write error into its ``unexpected pos`` RuntimeError) ends in one line; epoch 1 resumes."""
    import errno

    import defr.files
    from defr.files import OutputRefused

    writes = []

    class FillsUp:
        def __init__(self, f, full: bool):
            self.f, self.full = f, full

        def write(self, data):
            if self.full:  # the second train state: the disk is full
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def opened(path, mode="r"):
        if "train_state" in str(path):
            writes.append(path)
        return FillsUp(open(path, mode), full=len(writes) == 2)  # noqa: SIM115

    out = tmp_path / "run"
    monkeypatch.setattr(defr.files, "open", opened, raising=False)
    with pytest.raises(
        OutputRefused, match=r"disk is full \(No space left on device\) while writing epoch 2; .*--resume"
    ):
        train(tiny_config(synth_root, out))
    assert _temporaries(out) == [] and _epochs(out) == [1]
    assert torch.load(out / "train_state.pt", weights_only=True)["epoch"] == 1
    monkeypatch.undo()
    train(tiny_config(synth_root, out), resume=True)
    assert _epochs(out) == [1, 2]


# A ``defr train`` that stalls while writing epoch 2's train state (the window the issue found).
STALLING_TRAIN = """
import sys, time
from pathlib import Path
import torch
real_save = torch.save
def stalling_save(obj, f, *args, **kwargs):
    if isinstance(obj, dict) and obj.get("epoch") == 2:
        f.write(b"partial")
        f.flush()
        Path(sys.argv[1]).write_text("writing")
        time.sleep(300)
    return real_save(obj, f, *args, **kwargs)
torch.save = stalling_save
from defr.cli import main
main(sys.argv[2:])
"""


@pytest.mark.slow
def test_sigterm_while_the_state_is_written_stops_like_ctrl_c(synth_root, tmp_path):
    import signal
    import time

    out, ready = tmp_path / "run", tmp_path / "ready"
    cfg = tiny_config(synth_root, out)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(asdict(cfg)))
    args = ["train", "--config", str(tmp_path / "tiny.yaml")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "HF_HUB_OFFLINE": "1"}
    env["OMP_NUM_THREADS"] = "1"
    log = tmp_path / "child.log"
    with open(log, "w") as sink:  # a file, not a pipe: a full pipe would stall the child's progress bars
        child = subprocess.Popen(
            [sys.executable, "-c", STALLING_TRAIN, str(ready), *args], env=env, stdout=sink, stderr=sink
        )
        try:
            deadline = time.monotonic() + 300
            while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert ready.exists(), log.read_text()[-2000:]
            child.send_signal(signal.SIGTERM)
            child.wait(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    stderr = log.read_text()
    assert child.returncode == 143 and "interrupted (SIGTERM)" in stderr and "Traceback" not in stderr, stderr[-2000:]
    assert _temporaries(out) == []  # no empty 0600 temporary left behind
    assert _epochs(out) == [1]  # no metrics line for the epoch that was never saved
    assert torch.load(out / "train_state.pt", weights_only=True)["epoch"] == 1
    train(cfg, resume=True)
    assert _epochs(out) == [1, 2]


def test_failed_training_leaves_no_output_folder(tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(
        main, ["train", "--dataset", "synth", "--data-root", str(tmp_path / "nowhere"), "--output", str(out)]
    )
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not out.exists()


# --- kill -9 at any instant: training resumes to the uninterrupted result bit for bit ------------------------------

# A child that trains and, with ``kill_between_writes``, SIGKILLs itself after train_state.pt of that epoch,
# before model.safetensors.
TRAIN_CHILD = """
import json, os, signal, sys
args = json.loads(sys.argv[1])
import defr.train as t
if args.get("kill_between_writes"):
    import defr.train.run_folder as run_folder  # where the checkpoint is published
    publish = run_folder._publish
    def killing_publish(out, model, state):
        if state["epoch"] == args["kill_between_writes"]:
            os.kill(os.getpid(), signal.SIGKILL)
        publish(out, model, state)
    run_folder._publish = killing_publish
t.train(t.TrainConfig(**args["config"]), resume=args["resume"])
"""


@pytest.fixture(scope="module")
def crash_root(tmp_path_factory) -> Path:
    from defr.data import generate_synthetic

    return generate_synthetic(tmp_path_factory.mktemp("synth") / "data", images=32, seed=4, size=48)


def _crash_config(root: Path, out: Path) -> TrainConfig:
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


def _header(path: Path) -> str:
    """The JSON metadata of a safetensors file (its header, without reading tensors)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.dumps(f.metadata())


@pytest.mark.slow
def test_training_killed_between_the_two_writes_resumes_bit_exactly(crash_root, tmp_path):
    straight = train(_crash_config(crash_root, tmp_path / "straight"))
    cfg = _crash_config(crash_root, tmp_path / "killed")
    args = {"config": asdict(cfg), "resume": False, "kill_between_writes": 2}
    assert run_and_kill(TRAIN_CHILD, args, delay=600) == -signal.SIGKILL
    out = tmp_path / "killed"
    state = torch.load(out / "train_state.pt", weights_only=True)
    published = json.loads(json.loads(_header(out / "model.safetensors"))["metadata"])
    assert (state["epoch"], published["epoch"]) == (2, 1)  # the window the issue found: a mixed pair
    assert _same_weights(straight, train(cfg, resume=True))


@pytest.mark.slow
def test_training_killed_at_random_instants_resumes_bit_exactly(crash_root, tmp_path):
    started = time.perf_counter()
    straight = train(_crash_config(crash_root, tmp_path / "straight"))
    duration = time.perf_counter() - started
    rng = random.Random(7)
    for k in range(3):
        cfg = _crash_config(crash_root, tmp_path / f"killed{k}")
        # a child also pays interpreter and import time: spread the kills over its whole run
        args = {"config": asdict(cfg), "resume": False}
        run_and_kill(TRAIN_CHILD, args, rng.uniform(1.0, 2.0 * duration + 4))
        assert _same_weights(straight, _resume_until_done(cfg)), f"kill {k}"


# --- resume checks the state against its run (issue 28, item 8) -----------------------------------------------------


@pytest.fixture(scope="module")
def one_epoch_run(synth_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    train(tiny_config(synth_root, out, epochs=1))
    return out


def _copy_run(src: Path, dst: Path, edit=None) -> Path:
    import shutil

    shutil.copytree(src, dst)
    if edit is not None:
        state = torch.load(dst / "train_state.pt", weights_only=True)
        edit(state)
        torch.save(state, dst / "train_state.pt")
    return dst


def _wider(state):
    config = json.loads(state["config"])
    config["backbone"]["vit"]["width"] = 12_288  # heads 3 divide it: a valid config, 2.7 GB if allocated
    state["config"] = json.dumps(config)


def _foreign_weights(state):
    key = next(k for k, v in state["model"].items() if v.dim() == 2)
    state["model"][key] = torch.zeros(3, 3)


def _foreign_optimizer(state):
    for moments in state["optimizer"]["state"].values():
        moments["exp_avg"] = torch.zeros(7)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.update(epoch="1"), "'epoch' must be a whole number >= 0, got '1'"),
        (lambda s: s.update(epoch=10**9), "has 1000000000 epochs done, more than epochs=2"),
        (_wider, "the weights do not match the run's model"),
        (_foreign_weights, "the weights do not match the run's model"),
        (lambda s: s.update(config="[" * 100_000 + "]" * 100_000), "nested too deeply"),
        (_foreign_optimizer, "optimizer state of another model"),
    ],
)
def test_resume_refuses_a_state_that_is_not_this_runs(synth_root, one_epoch_run, tmp_path, edit, message):
    out = _copy_run(one_epoch_run, tmp_path / "run", edit)
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match=re.escape(message)):
        train(tiny_config(synth_root, out), resume=True)
    assert (out / "model.safetensors").read_bytes() == before


@pytest.mark.slow
def test_resume_refuses_changed_settings_and_another_runs_state(synth_root, one_epoch_run, tmp_path):
    out = _copy_run(one_epoch_run, tmp_path / "run")
    with pytest.raises(ConfigError, match=re.escape("loss 'lse-sign' -> 'bce'; image_size 64 -> 32; lr 0.001 -> 0.5")):
        train(tiny_config(synth_root, out, image_size=32, lr=0.5, loss="bce"), resume=True)
    runner = CliRunner()
    r = runner.invoke(main, ["train", "--resume", "--output", str(out), "--image-size", "32"])
    assert r.exit_code == 1 and "image_size 64 -> 32" in r.output and r.output.count("\n") == 1, r.output
    other = tmp_path / "other"
    train(tiny_config(synth_root, other, epochs=1, seed=6))
    (out / "train_state.pt").write_bytes((other / "train_state.pt").read_bytes())
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="are of different runs"):
        train(tiny_config(synth_root, out, seed=6), resume=True)
    assert (out / "model.safetensors").read_bytes() == before
    # the command resumes with the run's recorded settings: only --output (and more --epochs) given
    fresh = _copy_run(one_epoch_run, tmp_path / "again")
    r = runner.invoke(main, ["train", "--resume", "--output", str(fresh), "--epochs", "2"])
    assert r.exit_code == 0, r.output
    assert _epochs(fresh) == [1, 2]
