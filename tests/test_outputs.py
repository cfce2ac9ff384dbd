"""The output seam (``defr.files.OutputSet``): refusals, the set written as one, stale staging, the lock,
disk errors. Each command's use of it is tested beside the command."""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import defr.atomic as atomic
import defr.files as files
import defr.output_manifest as output_manifest
from defr.files import MANIFEST, OutputRefused, OutputSet, WriteError, write_with


def _write(paths: dict, **texts: str) -> None:
    for label, text in texts.items():
        paths[label].write_text(text)


def _manifest(folder) -> dict:
    return json.loads((folder / MANIFEST).read_text())


# --- refused before anything is written -------------------------------------------------------------


@pytest.mark.parametrize("how", ["same", "relative", "symlink", "hardlink"])
def test_an_output_that_is_an_input_by_any_name_is_refused(tmp_path, monkeypatch, how):
    source = tmp_path / "model.safetensors"
    source.write_bytes(b"weights")
    monkeypatch.chdir(tmp_path)
    out = {"same": source, "relative": "sub/../model.safetensors", "symlink": tmp_path / "link",
           "hardlink": tmp_path / "hard"}[how]  # fmt: skip
    (tmp_path / "sub").mkdir()
    if how == "symlink":
        out.symlink_to(source)
    if how == "hardlink":
        os.link(source, out)
    with pytest.raises(OutputRefused, match="is the input .*model.safetensors"):
        OutputSet({"--out": out}, inputs=[source])
    assert source.read_bytes() == b"weights"


def test_two_outputs_that_are_one_file_are_refused(tmp_path):
    a = tmp_path / "a.json"
    a.write_text("{}")
    os.link(a, tmp_path / "b.json")
    with pytest.raises(OutputRefused, match="--frames and --events are one file"):
        OutputSet({"--frames": a, "--events": tmp_path / "b.json"})
    with pytest.raises(OutputRefused, match="one file"):  # new paths: by real path
        OutputSet({"--frames": tmp_path / "n.json", "--events": tmp_path / "x" / ".." / "n.json"})


def test_devices_fifos_sockets_and_folders_are_refused(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    try:
        cases = ((os.devnull, "character device"), (fifo, "FIFO"), (sock_path, "socket"), (tmp_path, "folder"))
        for path, kind in cases:
            with pytest.raises(OutputRefused, match=kind):
                OutputSet({"--out": path})
    finally:
        sock.close()
    assert os.path.exists(os.devnull) and not os.path.isfile(os.devnull)


def test_a_symlink_is_written_through_to_its_target(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    with OutputSet({"--out": link}) as paths:
        paths["--out"].write_text("new")
    assert link.is_symlink() and target.read_text() == "new"
    with pytest.raises(OutputRefused, match="character device"):  # a link to a device is the device
        (tmp_path / "dev").symlink_to(os.devnull)
        OutputSet({"--out": tmp_path / "dev"})
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    with pytest.raises(OutputRefused, match="symlink to a missing file"):
        OutputSet({"--out": tmp_path / "dangling"})


def test_a_default_named_file_defr_did_not_write_is_refused_unless_overwrite(tmp_path):
    summary = tmp_path / "res.summary.json"
    summary.write_text("the user's notes")
    with pytest.raises(OutputRefused, match="was not written by defr.*--overwrite"):
        OutputSet({"summary": summary}, defaults=["summary"]).__enter__()
    assert summary.read_text() == "the user's notes"
    with OutputSet({"summary": summary}, defaults=["summary"], overwrite=True) as paths:
        paths["summary"].write_text("ours")
    with OutputSet({"summary": summary}, defaults=["summary"]) as paths:  # ours now: a rerun may replace it
        paths["summary"].write_text("ours again")
    summary.write_text("edited by the user")  # changed since: no longer ours
    with (
        pytest.raises(OutputRefused, match="not written by defr"),
        OutputSet({"summary": summary}, defaults=["summary"]),
    ):
        pass


# --- one set -----------------------------------------------------------------------------------------


def test_a_set_is_staged_then_swapped_in_with_its_completion_marker(tmp_path):
    (tmp_path / "a.json").write_text("old a")
    with OutputSet({"a": tmp_path / "a.json", "b": tmp_path / "b.png"}) as paths:
        assert paths["b"].parent == tmp_path and paths["b"].suffix == ".png"
        _write(paths, a="new a", b="new b")
        assert (tmp_path / "a.json").read_text() == "old a"  # nothing visible before the block ends
        assert _manifest(tmp_path)["sets"][next(iter(_manifest(tmp_path)["sets"]))]["state"] == "writing"
    assert (tmp_path / "a.json").read_text() == "new a" and (tmp_path / "b.png").read_text() == "new b"
    m = _manifest(tmp_path)
    assert [s["state"] for s in m["sets"].values()] == ["complete"]
    assert set(m["files"]) == {"a.json", "b.png"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST, "a.json", "b.png"]


def test_an_error_while_writing_keeps_the_old_set_and_leaves_no_staging(tmp_path):
    (tmp_path / "a.json").write_text("old a")
    with pytest.raises(RuntimeError), OutputSet({"a": tmp_path / "a.json", "b": tmp_path / "b.json"}) as paths:
        _write(paths, a="new a")
        raise RuntimeError("the plot failed")
    assert (tmp_path / "a.json").read_text() == "old a" and not (tmp_path / "b.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # no staging, no empty manifest


def test_a_declared_output_not_written_removes_the_old_one(tmp_path):
    (tmp_path / "b.json").write_text("old b")
    with OutputSet({"a": tmp_path / "a.json", "b": tmp_path / "b.json"}) as paths:
        _write(paths, a="new a")
    assert not (tmp_path / "b.json").exists()


def test_killed_between_renames_the_marker_says_incomplete_and_the_next_run_completes_it(tmp_path, monkeypatch):
    for name in ("video.mp4", "video.detections.jsonl", "video.events.jsonl"):
        (tmp_path / name).write_text("old")
    outputs = {n: tmp_path / f"video.{n}" for n in ("mp4", "detections.jsonl", "events.jsonl")}
    real_replace, calls = os.replace, []

    def killed_after_one(src, dst):
        if str(dst).endswith(MANIFEST):
            return real_replace(src, dst)
        if not calls:  # the first output goes in, then the process is killed
            calls.append(dst)
            return real_replace(src, dst)
        raise KeyboardInterrupt  # the kill: no handler of ours may tidy this up

    monkeypatch.setattr(files.os, "replace", killed_after_one)
    with pytest.raises(KeyboardInterrupt), OutputSet(outputs) as paths:
        for label, path in paths.items():
            path.write_text(f"new {label}")
    monkeypatch.setattr(files.os, "replace", real_replace)
    texts = sorted(p.read_text() for p in outputs.values())
    assert "old" in texts and any(t.startswith("new") for t in texts)  # a mix on disk ...
    assert [s["state"] for s in _manifest(tmp_path)["sets"].values()] == ["swapping"]  # ... not marked complete
    monkeypatch.setattr(output_manifest, "process_alive", lambda pid: False)  # the killed run is gone
    with OutputSet({"other": tmp_path / "other.json"}) as paths:  # any next run into the folder
        paths["other"].write_text("x")
    assert {label: p.read_text() for label, p in outputs.items()} == {n: f"new {n}" for n in outputs}
    assert {s["state"] for s in _manifest(tmp_path)["sets"].values()} == {"complete"}
    assert not list(tmp_path.glob(".*.defr-*"))


def test_stale_staging_of_a_killed_run_is_removed_by_the_next_run(tmp_path, monkeypatch):
    (tmp_path / "a.json").write_text("old")
    s = OutputSet({"a": tmp_path / "a.json"})
    paths = s.__enter__()  # killed while staging: __exit__ never runs
    paths["a"].write_text("half")
    stray = tmp_path / ".a.json.defr-999999999-dead.json"  # a staged file no manifest knows
    stray.write_text("x")
    monkeypatch.setattr(output_manifest, "process_alive", lambda pid: False)
    with OutputSet({"a": tmp_path / "a.json"}) as again:
        assert not paths["a"].exists() and not stray.exists()
        again["a"].write_text("new")
    assert (tmp_path / "a.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST, "a.json"]


def test_a_second_writer_of_the_same_output_is_refused_while_the_first_runs(tmp_path):
    out = tmp_path / "results.json"
    with OutputSet({"--out": out}) as paths:
        with pytest.raises(OutputRefused, match=f"pid {os.getpid()}"), OutputSet({"--out": out}):
            pass
        with OutputSet({"--out": tmp_path / "other.json"}) as other:  # another output of the folder is free
            other["--out"].write_text("y")
        paths["--out"].write_text("x")
    with OutputSet({"--out": out}) as paths:  # free again once the first is done
        paths["--out"].write_text("z")
    assert out.read_text() == "z"


def test_a_stream_writes_its_targets_and_records_them(tmp_path):
    summary = tmp_path / "run.summary.json"
    with pytest.raises(KeyboardInterrupt), OutputSet({"summary": summary}, defaults=["summary"], stream=True) as paths:
        assert paths["summary"] == summary
        summary.write_text("complete: false")
        raise KeyboardInterrupt  # Ctrl-C: what the stream wrote is still its own
    with OutputSet({"summary": summary}, defaults=["summary"], stream=True):  # recorded as defr's: no refusal
        pass


# --- disk errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_a_disk_error_is_one_line_and_leaves_nothing_half_written(tmp_path, code):
    (tmp_path / "a.json").write_text("old")
    with (
        pytest.raises(WriteError, match="cannot write .*a.json.*nothing half-written") as e,
        OutputSet({"a": tmp_path / "a.json", "b": tmp_path / "b.json"}) as paths,
    ):
        _write(paths, a="new")
        raise OSError(code, os.strerror(code))
    assert isinstance(e.value, OSError) and e.value.errno == code and "\n" not in str(e.value)
    assert (tmp_path / "a.json").read_text() == "old" and not (tmp_path / "b.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_write_with_surfaces_the_disk_error_a_library_hides(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")

    class Full:  # a disk that fills up after 500 bytes
        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, data):
            self.n += len(data)
            if self.n > 500:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(files, "open", lambda path, mode: Full(open(path, mode)), raising=False)  # noqa: SIM115
    with pytest.raises(RuntimeError, match="unexpected pos"), open(tmp_path / "plain.pt", "wb") as f:
        torch.save({"w": torch.zeros(1000)}, Full(f))
    (tmp_path / "plain.pt").unlink()
    with pytest.raises(WriteError, match="state.pt: No space left on device; nothing half-written"):
        write_with(tmp_path / "state.pt", lambda f: torch.save({"w": torch.zeros(1000)}, f))
    assert list(tmp_path.iterdir()) == []


def test_a_killed_stream_leaves_its_files_as_defr_s_and_frees_them(tmp_path, monkeypatch):
    summary = tmp_path / "run.summary.json"
    OutputSet({"summary": summary}, defaults=["summary"], stream=True).__enter__()  # then killed
    summary.write_text('{"complete": false}')
    monkeypatch.setattr(output_manifest, "process_alive", lambda pid: False)
    with OutputSet({"summary": summary}, defaults=["summary"], stream=True):  # not busy, not refused
        summary.write_text('{"complete": true}')


# --- a folder output ---------------------------------------------------------------------------------


def _old_folder(tmp_path):
    """``out/`` as an earlier run left it (``a.txt``, ``sub/``) with a file of the user's beside them."""
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "a.txt").write_text("old a")
    (out / "sub" / "b.txt").write_text("old b")
    (out / "notes.txt").write_text("mine")
    return out


def _write_folder(staged) -> None:
    (staged / "sub").mkdir()
    (staged / "a.txt").write_text("new a")
    (staged / "sub" / "b.txt").write_text("new b")


def _folder_state(out) -> tuple[str, str]:
    return (out / "a.txt").read_text(), (out / "sub" / "b.txt").read_text()


def test_a_folder_is_staged_beside_swapped_in_whole_and_recorded_by_inode(tmp_path):
    out = _old_folder(tmp_path)
    with OutputSet({"OUT": files.Folder(out, entries=("a.txt", "sub"), guard=False)}) as paths:
        staged = paths["OUT"]
        assert staged.parent == tmp_path and staged.name.startswith(".out.defr-") and staged.is_dir()
        _write_folder(staged)
        assert _folder_state(out) == ("old a", "old b")  # nothing visible before the block ends
    assert _folder_state(out) == ("new a", "new b") and (out / "notes.txt").read_text() == "mine"
    m = _manifest(tmp_path)
    assert m["files"]["out"] == {"ino": os.stat(out).st_ino, "folder": True, "set": next(iter(m["sets"]))}
    assert [s["state"] for s in m["sets"].values()] == ["complete"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST, "out"]  # no staged or old folder left


@pytest.mark.slow  # spawns a process
def test_a_folder_run_killed_before_its_swap_leaves_the_old_folder_and_the_next_run_cleans_up(tmp_path):
    out = _old_folder(tmp_path)
    script = (
        "import sys, time; from pathlib import Path; from defr.files import Folder, OutputSet\n"
        "paths = OutputSet({'OUT': Folder(sys.argv[1], guard=False)}).__enter__()\n"
        "(paths['OUT'] / 'a.txt').write_text('new a'); print(paths['OUT'], flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE, text=True)
    staged = Path(proc.stdout.readline().strip())
    with pytest.raises(OutputRefused, match=f"being written by another defr process \\(pid {proc.pid}\\)"):
        OutputSet({"OUT": files.Folder(out, guard=False)}).__enter__()  # a second live writer
    proc.kill()
    proc.wait()
    proc.stdout.close()
    assert staged.is_dir() and _folder_state(out) == ("old a", "old b")  # killed: the old folder, whole
    with OutputSet({"OUT": files.Folder(out, guard=False)}) as paths:  # the next run: the dead run's staging goes
        assert not staged.exists()
        _write_folder(paths["OUT"])
    assert _folder_state(out) == ("new a", "new b") and not list(tmp_path.glob(".*.defr-*"))


def test_a_folder_run_killed_after_the_exchange_is_finished_not_undone(tmp_path, monkeypatch):
    out = _old_folder(tmp_path)

    def exchanged_then_killed(new, target):
        assert atomic._exchange(Path(new), Path(target))  # the new folder is in; the old one sits at ``new``
        raise KeyboardInterrupt  # killed before the old folder was removed

    monkeypatch.setattr(output_manifest, "replace_dir", exchanged_then_killed)
    with pytest.raises(KeyboardInterrupt), OutputSet({"OUT": files.Folder(out, guard=False)}) as paths:
        _write_folder(paths["OUT"])
    monkeypatch.undo()
    assert [s["state"] for s in _manifest(tmp_path)["sets"].values()] == ["swapping"]
    monkeypatch.setattr(output_manifest, "process_alive", lambda pid: False)
    with OutputSet({"other": tmp_path / "other.json"}) as paths:  # any next run into the parent folder
        paths["other"].write_text("x")
    assert _folder_state(out) == ("new a", "new b")  # the old folder left at the staged name is not swapped back
    assert not list(tmp_path.glob(".*.defr-*"))


def test_a_folder_defr_did_not_write_is_refused_unless_overwrite_or_marked(tmp_path):
    out = _old_folder(tmp_path)
    with pytest.raises(OutputRefused, match=r"out: not empty \(a.txt, notes.txt, sub\) and not written by defr"):
        OutputSet({"OUT": files.Folder(out, entries=("a.txt",))}).__enter__()
    with OutputSet({"OUT": files.Folder(out, entries=("a.txt",))}, overwrite=True) as paths:
        (paths["OUT"] / "a.txt").write_text("new a")
    assert (out / "a.txt").read_text() == "new a" and (out / "notes.txt").read_text() == "mine"
    (out / "later.txt").write_text("added by the user")  # the folder stays defr's: its inode is recorded
    with OutputSet({"OUT": files.Folder(out)}):
        pass
    legacy = _old_folder(tmp_path / "legacy")
    (legacy / "set.json").write_text("{}")  # an earlier version's marker, no manifest record
    with OutputSet({"OUT": files.Folder(legacy, marker="set.json")}):
        pass
    with OutputSet({"OUT": files.Folder(tmp_path / "empty")}):  # a new (or empty) folder holds nothing to lose
        pass


def test_a_symlinked_folder_is_written_through_and_the_link_stays(tmp_path):
    real = _old_folder(tmp_path / "disk")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    with OutputSet({"OUT": files.Folder(link, guard=False)}) as paths:
        assert paths["OUT"].parent == real.parent  # staged beside the folder the link points to
        _write_folder(paths["OUT"])
    assert link.is_symlink() and link.resolve() == real and _folder_state(real) == ("new a", "new b")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputRefused, match="is a regular file, not a folder"):
        OutputSet({"OUT": files.Folder(tmp_path / "file")})


def test_a_folder_that_is_or_holds_an_input_of_the_run_is_refused(tmp_path):
    out = _old_folder(tmp_path)
    for given in (out, out / "sub" / "b.txt", tmp_path / "alias"):
        if given.name == "alias":
            given.symlink_to(out / "a.txt")
        with pytest.raises(OutputRefused, match="would destroy the input"):
            OutputSet({"OUT": files.Folder(out, entries=("a.txt", "sub"))}, inputs=[given])
    OutputSet({"OUT": files.Folder(out, entries=("a.txt", "sub"))}, inputs=[out / "notes.txt"])  # kept: allowed


def test_a_writer_on_another_machine_counts_as_live(tmp_path, monkeypatch):
    """A folder shared over the network: another machine's pid says nothing here, so its set is neither
    taken for a dead run's (its staging kept) nor written over."""
    out = tmp_path / "a.json"
    OutputSet({"--out": out}).__enter__()  # then "killed"; its set is rewritten as another machine's
    m = _manifest(tmp_path)
    (s,) = m["sets"].values()
    s["host"] = "elsewhere"
    (tmp_path / MANIFEST).write_text(json.dumps(m))
    monkeypatch.setattr(output_manifest, "process_alive", lambda pid: False)
    with pytest.raises(OutputRefused, match=rf"pid {os.getpid()} on elsewhere.*remove its set from {MANIFEST}"):
        OutputSet({"--out": out}).__enter__()
    assert [t["host"] for t in _manifest(tmp_path)["sets"].values()] == ["elsewhere"]
    m["sets"] = {}  # the way out the message names, for a machine that is gone
    (tmp_path / MANIFEST).write_text(json.dumps(m))
    with OutputSet({"--out": out}) as paths:
        paths["--out"].write_text("x")
    assert out.read_text() == "x" and not list(tmp_path.glob(".*.defr-*"))


@pytest.mark.parametrize(
    "sets",
    [
        {"a": {"state": "writing", "pid": 999999999, "files": {"x": "../victim.txt"}}},  # staged outside: removed
        {"a": {"state": "swapping", "pid": 999999999, "files": {"../victim.txt": ""}}},  # unwritten: unlinked
        {"a": {"state": "swapping", "pid": 999999999, "files": {"y": "../victim.txt"}}},  # renamed away
        {"a": {"state": "writing", "pid": 999999999, "files": {"x": "/abs/victim.txt"}}},
    ],
)
def test_a_manifest_naming_files_outside_its_folder_is_refused_and_destroys_nothing(tmp_path, sets):
    """Round-4 probe: recovery removed or renamed whatever a damaged manifest named, outside the folder too."""
    folder = tmp_path / "out"
    folder.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    text = json.dumps({"format": files.MANIFEST_FORMAT, "files": {}, "sets": sets})
    (folder / MANIFEST).write_text(text.replace("/abs/victim.txt", str(victim)))
    refused = pytest.raises(OutputRefused, match="malformed defr output manifest .* not a file of this folder")
    with refused, OutputSet({"--out": folder / "r.json"}) as paths:
        paths["--out"].write_text("{}")
    assert victim.read_text() == "precious"


@pytest.mark.parametrize(
    "body",
    [
        {"files": [], "sets": {}},
        {"files": None, "sets": {}},
        {"files": {}, "sets": []},
        {"files": {"r.json": "x"}, "sets": {}},
        {"files": {}, "sets": {"a": {}}},
        {"files": {}, "sets": {"a": "x"}},
        {"files": {}, "sets": {"a": {"state": "writing", "pid": "x", "files": {}}}},
        {"files": {}, "sets": {"a": {"state": "writing", "pid": -1, "files": {}}}},  # kill(-1, 0): "alive"
    ],
)
def test_a_manifest_with_fields_of_the_wrong_shape_is_one_line_not_a_traceback(tmp_path, body):
    (tmp_path / MANIFEST).write_text(json.dumps({"format": files.MANIFEST_FORMAT, **body}))
    refused = pytest.raises(OutputRefused, match=r"malformed defr output manifest \(.*\); remove it")
    with refused, OutputSet({"--out": tmp_path / "r.json"}):
        pass


def test_a_huge_manifest_is_refused_before_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(output_manifest, "MAX_MANIFEST_BYTES", 1000)
    (tmp_path / MANIFEST).write_text(json.dumps({"format": files.MANIFEST_FORMAT, "pad": "x" * 2000}))
    with pytest.raises(OutputRefused, match="more than the 1000 allowed"), OutputSet({"--out": tmp_path / "r.json"}):
        pass


def test_dash_is_refused_rather_than_written_as_a_file_named_dash(tmp_path, monkeypatch):
    """Round-4 probe: ``detect --out -`` wrote a file named ``-`` and said ``wrote -``."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputRefused, match="does not write outputs to stdout"), OutputSet({"--out": Path("-")}):
        pass
    with OutputSet({"--out": tmp_path / "-"}) as paths:  # a file named "-" by its full path
        paths["--out"].write_text("x")
    assert (tmp_path / "-").read_text() == "x"


def test_a_folder_output_that_is_a_mount_point_is_refused_before_any_work(tmp_path, monkeypatch):
    """Round-4 probe: ``defr-export -o VOLUME`` (a mounted volume's root) ran the whole export, then failed with
    EBUSY at the exchange, and its journal, left "swapping", made every later run into the parent fail."""
    mounted = tmp_path / "volume"
    mounted.mkdir()
    real_ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: os.fspath(p) == str(mounted) or real_ismount(p))
    with pytest.raises(OutputRefused, match="is a mount point: .* give a folder inside it"):
        OutputSet({"OUT": files.Folder(mounted)})
    assert not (tmp_path / MANIFEST).exists() and sorted(os.listdir(tmp_path)) == ["volume"]
    with OutputSet({"OUT": files.Folder(mounted / "inside")}) as paths:  # a folder inside it is fine
        (paths["OUT"] / "a.txt").write_text("x")
    assert (mounted / "inside" / "a.txt").read_text() == "x"


@pytest.mark.parametrize("folder", [False, True])
def test_an_output_with_a_long_legal_name_is_written_and_leaves_its_folder_usable(tmp_path, folder):
    """Round-4 probe: a 244-byte output name (legal) made its staged name too long: ENAMETOOLONG, a set left
    "writing" in the manifest, and every later run into the folder failed with a traceback."""
    name = "a" * 240 + ".json"
    value = files.Folder(tmp_path / name) if folder else tmp_path / name
    with OutputSet({"--out": value}) as paths:
        if folder:
            (paths["--out"] / "x.txt").write_text("1")
        else:
            files.write_json({"a": 1}, paths["--out"])  # atomic: its own temporary name beside the staged one
    assert (tmp_path / name / "x.txt").read_text() == "1" if folder else json.loads((tmp_path / name).read_text())
    with OutputSet({"--out": tmp_path / "next.json"}) as paths:
        paths["--out"].write_text("2")
    assert {s["state"] for s in _manifest(tmp_path)["sets"].values()} == {"complete"}


def test_a_dead_set_whose_staged_name_is_too_long_does_not_block_the_folder(tmp_path):
    staged = "." + "a" * 245 + ".json.defr-999999999-dead.json"  # what an earlier version recorded
    sets = {"999999999-dead": {"pid": 999999999, "state": "writing", "files": {"a" * 245 + ".json": staged}}}
    (tmp_path / MANIFEST).write_text(json.dumps({"format": files.MANIFEST_FORMAT, "files": {}, "sets": sets}))
    with OutputSet({"--out": tmp_path / "next.json"}) as paths:
        paths["--out"].write_text("2")
    assert "999999999-dead" not in _manifest(tmp_path)["sets"]


def test_a_folder_that_cannot_be_written_is_refused_naming_the_output_not_a_temporary_file(tmp_path, monkeypatch):
    """Round-4 probe: a read-only folder gave ``[Errno 30] Read-only file system: '.../..defr-outputs.json.x.tmp'``."""

    def read_only(obj, path, indent=None):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path) + ".tmp")

    monkeypatch.setattr(output_manifest, "write_json", read_only)
    out = tmp_path / "r.json"
    refused = pytest.raises(OutputRefused, match=rf"^{out}: cannot write into {tmp_path} \(Read-only file system\)$")
    with refused, OutputSet({"--out": out}):
        pass


def test_a_dead_runs_swap_that_fails_for_good_is_dropped_naming_its_outputs(tmp_path, monkeypatch, caplog):
    """Round-4 probe, left open then: a journal left "swapping" whose swap the file system refuses for good (as a
    mount point did) made every later run into that folder fail. The next run now drops it, naming its outputs."""
    outputs = {"a": tmp_path / "a.json", "b": tmp_path / "b.json"}
    for p in outputs.values():
        p.write_text("old")
    real_replace = os.replace

    def refused(src, dst):
        if Path(dst).name == "b.json":
            raise OSError(errno.EBUSY, "Device or resource busy")
        return real_replace(src, dst)

    monkeypatch.setattr(output_manifest.os, "replace", refused)
    with pytest.raises(OSError, match="busy"), OutputSet(outputs) as paths:
        for label, path in paths.items():
            path.write_text(f"new {label}")
    assert [s["state"] for s in _manifest(tmp_path)["sets"].values()] == ["swapping"]
    monkeypatch.setattr(output_manifest, "process_alive", lambda pid: False)  # that run is gone; b stays refused
    caplog.set_level(logging.WARNING, logger="defr.output_manifest")
    with OutputSet({"other": tmp_path / "other.json"}) as paths:  # the next run into the folder goes on
        paths["other"].write_text("x")
    assert (tmp_path / "other.json").read_text() == "x"
    assert "could not finish an earlier run's output set" in caplog.text and str(outputs["b"]) in caplog.text
    assert {s["state"] for s in _manifest(tmp_path)["sets"].values()} == {"complete"}
    assert not list(tmp_path.glob(".*.defr-*"))  # its staged b removed as any dead run's
    assert outputs["a"].read_text() == "new a" and outputs["b"].read_text() == "old"  # the mix the warning names
