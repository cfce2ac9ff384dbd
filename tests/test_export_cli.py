"""``defr-export``: files, sidecar, summary, exit codes, bad input, the released layout, the demo hook."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from killkit import run_and_kill
from onnx import numpy_helper

from defr import vocab
from defr.demo import export_and_check
from defr.export import ExportConfig, ExportError, VerificationError, export_model, verify
from defr.export.cli import main
from defr.export.verify import feeds, ort_session
from defr.files import MANIFEST
from defr.model import create_model, save_checkpoint
from defr.model.official import load_official_checkpoint
from defr.runtime.contract import OUTPUT_NAMES, example_inputs
from defr.runtime.sidecar import Sidecar, sha256
from defr.signals import sigterm_as_interrupt

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def model():
    return create_model("tiny-vit", 64)


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(model, path)
    return path


def _leftovers(folder) -> list[str]:
    """Staged folders an export left beside its output (the seam's manifest is no leftover)."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != MANIFEST]


@pytest.mark.slow
def test_export_writes_onnx_fp16_and_sidecar(checkpoint, model, tmp_path):
    out = tmp_path / "export"
    r = CliRunner().invoke(main, [str(checkpoint), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["model.fp16.onnx", "model.json", "model.onnx"]
    assert "max |Δ| pair_logits" in r.output and "image_logits" in r.output
    table = r.output[r.output.index("file ") :]
    assert "model.onnx" in table and "model.fp16.onnx" in table and " ms" in table
    sidecar = json.loads((out / "model.json").read_text())
    assert sidecar["classes"] == vocab.hico().class_names
    assert sidecar["input"]["image_size"] == 64 and sidecar["input"]["patch_size"] == 16
    assert sidecar["input"]["mean"] == list(model.cfg.backbone.mean)
    assert sidecar["head"]["logit_scale"] == pytest.approx(float(model.logit_scale.exp()))
    assert sidecar["format"] == "defr-export/3" and "score_rule" not in sidecar  # no defaults nothing reads
    assert Sidecar.from_dict(sidecar).to_dict() == sidecar  # the typed record round-trips the file
    assert sidecar["graph"]["opset"] == 18 and sidecar["graph"]["plugin"] is False
    assert sidecar["exporter"]["onnx"] == onnx.__version__ and sidecar["exporter"]["torch"] is not None
    assert sidecar["source"]["sha256"] == sha256(checkpoint)
    for name, entry in sidecar["files"].items():
        assert entry["sha256"] == sha256(out / name) and entry["bytes"] == (out / name).stat().st_size
    assert _leftovers(tmp_path) == []


@pytest.mark.slow
def test_released_checkpoint_at_another_size(tmp_path, clip_layout_model):
    """The released .pth layout (``module.visual_encoder.visual.*``), exported at 96 px."""
    tiny = clip_layout_model
    state = {f"module.visual_encoder.visual.{k}": v for k, v in tiny.backbone.state_dict().items()}
    # rows of norm ~1 like the released T·Pᵀ, so logits have the released scale (γ ≈ 100)
    state |= {"module.classifier": torch.randn(600, 192) / 192**0.5, "module.logit_scale": torch.tensor(4.61)}
    path = tmp_path / "defr_official.pth"
    torch.save({"model_state_dict": state}, path)
    out = tmp_path / "export"
    r = CliRunner().invoke(main, [str(path), "-o", str(out), "--image-size", "96", "--no-verify"])
    assert r.exit_code == 0, r.output
    sidecar = json.loads((out / "model.json").read_text())
    assert sidecar["input"]["image_size"] == 96 and sidecar["head"]["type"] == "clip"
    reference = load_official_checkpoint(path, image_size=96)
    inputs = example_inputs(96, 2, 5)
    got = ort_session(out / "model.onnx").run(list(OUTPUT_NAMES), feeds(inputs))
    with torch.no_grad():
        want = reference.forward_pairs(*inputs, with_image_logits=True)
    for g, w in zip(got, want, strict=True):
        assert np.abs(g - w.numpy()).max() < 1e-4


@pytest.mark.slow
def test_engine_without_tensorrt_writes_onnx_then_fails(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as on a machine without TensorRT
    out = tmp_path / "export"
    r = CliRunner().invoke(main, [str(checkpoint), "-o", str(out), "--engine", "fp16", "--no-verify"])
    assert r.exit_code == 2
    assert sorted(p.name for p in out.iterdir()) == ["model.fp16.onnx", "model.json", "model.onnx"]
    error = [line for line in r.output.splitlines() if line.startswith("Error: ")]
    assert len(error) == 1 and "engine not built" in error[0] and "TensorRT 10.x and 11.x" in error[0], r.output
    assert 'pip install "defr[gpu]"' in error[0]
    assert json.loads((out / "model.json").read_text())["engine"] is None


@pytest.mark.slow
def test_verification_failure_exits_1_and_writes_nothing(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(verify.TOLERANCES, "fp16", verify.Tolerance("rel", 1e-9))  # float16 cannot meet this
    out = tmp_path / "export"
    r = CliRunner().invoke(main, [str(checkpoint), "-o", str(out)])
    assert r.exit_code == 1, r.output
    assert "model.fp16.onnx" in r.output and "FAILED" in r.output
    assert not out.exists() and _leftovers(tmp_path) == []


@pytest.mark.slow
def test_verification_error_on_a_nan_graph_is_a_failed_export(checkpoint, tmp_path, monkeypatch):
    """The export's own verification fails (exit 1, nothing written) when ONNX Runtime gives NaN."""
    import defr.export.exporter as exporter

    real = exporter.compare_with_torch

    def nan_graph(path, model, precision, **kw):
        proto = onnx.load(str(path))
        first = proto.graph.initializer[0]
        first.CopyFrom(
            numpy_helper.from_array(np.full(numpy_helper.to_array(first).shape, np.nan, np.float32), first.name)
        )
        onnx.save(proto, str(path))
        return real(path, model, precision, **kw)

    monkeypatch.setattr(exporter, "compare_with_torch", nan_graph)
    with pytest.raises(VerificationError, match="disagrees with PyTorch"):
        export_model(checkpoint, tmp_path / "export", log=lambda m: None)
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-pairs", "0"], "max pairs must be >= 1"),
        (["--max-batch", "0"], "max batch must be >= 1"),
        (["--opset", "11"], "opset 11 is not supported"),
        (["--image-size", "70"], "image size 70 is not a multiple of the patch size 16"),
        (["--plugin-library", "libdefr.so"], "--plugin-library applies to --plugin with --engine"),
    ],
)
def test_bad_arguments(checkpoint, tmp_path, args, message):
    out = tmp_path / "export"
    r = CliRunner().invoke(main, [str(checkpoint), "-o", str(out), *args])
    assert r.exit_code == 2 and message in r.output, r.output
    assert not out.exists() and _leftovers(tmp_path) == []


def test_not_a_checkpoint(tmp_path):
    bogus = tmp_path / "notes.txt"
    bogus.write_text("not a model")
    r = CliRunner().invoke(main, [str(bogus), "-o", str(tmp_path / "export")])
    assert r.exit_code == 2 and "not a DEFR checkpoint" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_class_names_must_name_hico_objects(tmp_path):
    checkpoint = tmp_path / "odd.safetensors"
    save_checkpoint(create_model("tiny-vit", 64, ["ride unicorn", "feed unicorn"]), checkpoint)
    r = CliRunner().invoke(main, [str(checkpoint), "-o", str(tmp_path / "export")])
    assert r.exit_code == 2 and "'unicorn' is not a HICO object" in r.output, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.safetensors"]


def test_output_dir_is_a_file(checkpoint, tmp_path):
    target = tmp_path / "export"
    target.write_text("occupied")
    r = CliRunner().invoke(main, [str(checkpoint), "-o", str(target)])
    assert r.exit_code == 2 and f"Directory '{target}' is a file" in r.output  # refused by the option itself
    assert target.read_text() == "occupied" and _leftovers(tmp_path) == []


@pytest.mark.slow
def test_existing_output_keeps_the_users_files_and_folders(checkpoint, tmp_path):
    """The export replaces its own files; everything else in the folder stays, subfolders included."""
    out = tmp_path / "export"
    (out / "notes" / "deep").mkdir(parents=True)
    (out / "notes" / "important.txt").write_text("mine")
    (out / "notes" / "deep" / "more.txt").write_text("also mine")
    (out / "readme.md").write_text("hello")
    (out / "link").symlink_to("notes/important.txt")
    (out / "model.onnx").write_text("an old export's file: replaced")
    r = CliRunner().invoke(main, [str(checkpoint), "-o", str(out), "--no-verify"])
    assert r.exit_code == 0, r.output
    assert (out / "notes" / "important.txt").read_text() == "mine"
    assert (out / "notes" / "deep" / "more.txt").read_text() == "also mine"
    assert (out / "readme.md").read_text() == "hello"
    assert (out / "link").is_symlink() and (out / "link").read_text() == "mine"
    assert sha256(out / "model.onnx") == json.loads((out / "model.json").read_text())["files"]["model.onnx"]["sha256"]
    assert _leftovers(tmp_path) == []


@pytest.mark.slow
def test_export_into_a_symlinked_folder_keeps_the_link(checkpoint, tmp_path):
    """The link's target is resolved first: the export lands there, the link stays a link, nothing is left over."""
    real = tmp_path / "real"
    real.mkdir()
    (real / "notes.txt").write_text("mine")
    (tmp_path / "links").mkdir()
    link = tmp_path / "links" / "linkexp"
    link.symlink_to(real, target_is_directory=True)
    for _ in range(2):  # a fresh export, then one over it
        r = CliRunner().invoke(main, [str(checkpoint), "-o", str(link), "--no-verify"])
        assert r.exit_code == 0, r.output
        assert link.is_symlink() and link.resolve() == real.resolve()
        assert sorted(p.name for p in real.iterdir()) == ["model.fp16.onnx", "model.json", "model.onnx", "notes.txt"]
        assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "links") == []


def test_stale_staging_cleanup_finds_a_swapped_out_link(tmp_path):
    """A ``.NAME.export-PID-*`` symlink left by an older version (a link exchanged out of place) is
    removed by the next export's cleanup, and the folder it points to is left alone."""
    from defr.files import clean_stale_staging

    real = tmp_path / "real"
    real.mkdir()
    (real / "keep.txt").write_text("mine")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".linkexp.export-{int(dead.stdout)}-abcd"
    stale.symlink_to(real, target_is_directory=True)
    assert clean_stale_staging(tmp_path / "linkexp", "export") == [stale]
    assert not stale.is_symlink() and (real / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_sigterm_during_export_is_handled_like_ctrl_c(checkpoint, tmp_path):
    """SIGTERM mid-export: staging removed, one line on stderr, exit 128 + 15, the output folder as it was."""
    out = tmp_path / "export"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "defr.export.cli", str(checkpoint), "-o", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(p.is_dir() and (p / "model.onnx").exists() for p in tmp_path.glob(".export.defr-*")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "interrupted (SIGTERM)" in lines[0] and "Traceback" not in stderr, stderr
    kept = sorted(p.name for p in out.iterdir())
    # The export is left out; or, when the signal fell in a finalizer (defr.signals), it finished and is whole.
    assert kept == ["notes.txt"] or {"notes.txt", "model.onnx", "model.json"} <= set(kept), kept
    assert _leftovers(tmp_path) == []


@pytest.mark.slow
def test_the_command_parses_its_options_before_torch_and_onnx_load():
    """Round-4 probe: Ctrl-C in ``defr-export``'s first seconds printed a ``KeyboardInterrupt`` traceback, as the
    console script imported torch and ONNX before the command could take the signal."""
    code = "import sys, defr.export.cli; print(sorted({'torch', 'onnx', 'onnxruntime'} & set(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.slow
def test_ctrl_c_while_the_exporter_imports_is_one_line_and_130(checkpoint, tmp_path):
    out = tmp_path / "export"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "defr.export.cli", str(checkpoint), "-o", str(out)]
    # SIG_DFL, not the SIG_IGN a background test run may pass on, so that Python installs its Ctrl-C handler
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(1.0)  # torch, ONNX and the exporter take seconds to import
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines() == [stderr.strip()] and "interrupted (SIGINT)" in stderr, stderr
    assert not out.exists() and _leftovers(tmp_path) == []


def test_an_interrupt_python_wraps_during_the_exporters_import_is_one_line_and_130(monkeypatch, tmp_path):
    """Ctrl-C inside a class body being imported reaches the command as ``RuntimeError`` caused by it."""

    class Importing(types.ModuleType):
        def __getattr__(self, name):
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt as e:
                raise RuntimeError("Error calling __set_name__ on 'Field' instance 'globals'") from e

    monkeypatch.setitem(sys.modules, "defr.export.exporter", Importing("defr.export.exporter"))
    r = CliRunner().invoke(main, [str(tmp_path / "m.safetensors"), "-o", str(tmp_path / "out")])
    assert r.exit_code == 130 and r.output.startswith("interrupted (SIGINT), nothing half-written"), r.output


def test_sigterm_swallowed_by_a_finalizer_still_interrupts():
    """A KeyboardInterrupt raised where Python ignores exceptions is raised again when the block ends."""
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"), sigterm_as_interrupt() as received:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs here
        except KeyboardInterrupt:
            pass  # as the garbage collector does with an exception from a weakref callback
    assert received == [signal.SIGTERM] and signal.getsignal(signal.SIGTERM) is previous


def test_unwritable_export_folder_is_refused_before_the_work(checkpoint, tmp_path, monkeypatch):
    import defr.export.exporter as exporter

    out = tmp_path / "export"
    out.mkdir()

    class Refused:
        def __init__(self, dir, prefix):  # noqa: A002 (tempfile's name)
            if Path(dir) == out:
                raise PermissionError(13, "Permission denied")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(exporter.tempfile, "NamedTemporaryFile", Refused)
    monkeypatch.setattr(exporter, "load_model", lambda *a: pytest.fail("the export started before the check"))
    r = CliRunner().invoke(main, [str(checkpoint), "-o", str(out)])
    assert r.exit_code == 2 and "cannot write into" in r.output and "Permission denied" in r.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders: the monkeypatched test covers it")
def test_read_only_export_folder(checkpoint, tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    out.chmod(0o555)
    r = CliRunner().invoke(main, [str(checkpoint), "-o", str(out)])
    assert r.exit_code == 2 and "cannot write into" in r.output


def test_config_validation_is_the_api_too():
    with pytest.raises(ExportError, match="--plugin-library applies"):
        ExportConfig(plugin_library="libdefr.so")
    with pytest.raises(ExportError, match="engine precision"):
        ExportConfig(engine="int8")


@pytest.mark.slow
def test_export_and_check_on_synthetic_images(tmp_path):
    from defr.data import generate_synthetic

    root = generate_synthetic(tmp_path / "synth", images=24, seed=0, size=64)
    classes = json.loads((root / "instances_test2015.json").read_text())
    names = [f"{classes['verbs'][v]} {classes['objects'][o]}" for _, o, v in classes["correspondence"]]
    checkpoint = tmp_path / "model.safetensors"
    save_checkpoint(create_model("tiny-vit", 64, names), checkpoint)
    summary = export_and_check(checkpoint, tmp_path / "export", synth_root=root, max_images=6)
    json.dumps(summary)  # JSON-able
    assert set(summary["files"]) == {"model.onnx", "model.fp16.onnx"}
    assert summary["max_abs_diff_pair"] < 1e-4 and summary["max_abs_diff_image"] < 1e-4
    detection = summary["detection"]
    assert detection["images"] == 6 and detection["same_top_triplet"] == 6
    assert detection["max_abs_diff_score"] < 1e-5


# --- kill -9 at any instant: an export folder holds the old set of files or the new one, never a mix ---------------

# A child that exports and, with ``kill_after_swap``, SIGKILLs itself when the new folder is in place and the old
# one not yet removed.
EXPORT_CHILD = """
import json, os, signal, sys
args = json.loads(sys.argv[1])
import defr.export.exporter as e
if args.get("kill_after_swap"):
    from defr import atomic, output_manifest
    def killing_replace(new, target):
        atomic._exchange(new, target)
        os.kill(os.getpid(), signal.SIGKILL)
    output_manifest.replace_dir = killing_replace
e.export_model(args["checkpoint"], args["out"], e.ExportConfig(verify=False), log=lambda m: None)
"""


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
    assert run_and_kill(EXPORT_CHILD, {"checkpoint": str(old), "out": str(out)}, delay=600) == 0
    duration = time.perf_counter() - started
    states = {_sha(old): "old", _sha(new): "new"}
    seen = []
    rng = random.Random(3)
    for delay in [rng.uniform(0.5, duration)]:  # one random instant: each run is a full export (CI time)
        run_and_kill(EXPORT_CHILD, {"checkpoint": str(new), "out": str(out)}, delay)
        seen.append(states[_export_state(out)])
        assert (out / "notes.txt").read_text() == "mine"
    args = {"checkpoint": str(new), "out": str(out), "kill_after_swap": True}
    assert run_and_kill(EXPORT_CHILD, args, delay=600) == -signal.SIGKILL
    assert states[_export_state(out)] == "new" and (out / "notes.txt").read_text() == "mine"
    leftovers = list(tmp_path.glob(".export.defr-*"))
    assert leftovers  # the killed runs left staging folders (one holds the old set)
    assert run_and_kill(EXPORT_CHILD, {"checkpoint": str(old), "out": str(out)}, delay=600) == 0
    assert states[_export_state(out)] == "old"
    assert list(tmp_path.glob(".export.defr-*")) == []  # stale staged folders of dead runs are removed
    print("states after random kills:", seen)


def test_every_name_defr_export_lists_loads_from_its_module():
    import defr.export

    for name in defr.export.__all__:
        assert getattr(defr.export, name).__name__ == name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        defr.export.nope  # noqa: B018


def test_an_empty_out_dir_is_refused_not_read_as_the_current_folder(checkpoint):
    """Round-5 probe: ``-o ''`` (an unset shell variable) exported into the current folder, swapping it for a new one
    under any process working in it."""
    r = CliRunner().invoke(main, [str(checkpoint), "-o", ""])
    assert r.exit_code == 2 and "is empty: give a folder" in r.output, r.output
