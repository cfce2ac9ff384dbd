"""The manifest of an output folder, ``.defr-outputs.json`` (``MANIFEST_FORMAT``), that ``defr.files.OutputSet``
keeps: the files and folders defr wrote there and the sets being written, with their state, pid and host;
the swap a set's journal drives, and the recovery of what a killed run left (docs/architecture.md, "One
set", "A folder output", "Who is alive").
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from defr.atomic import process_alive, replace_dir, umask, write_json
from defr.errors import DefrError
from defr.jsonio import read_json

MANIFEST = ".defr-outputs.json"
MANIFEST_FORMAT = "defr-outputs/1"
HOST = socket.gethostname()  # a set's pid means something only on the machine that wrote it
MAX_MANIFEST_BYTES = 16 * 2**20  # a folder's records take ~150 bytes a file: far more than any run writes
SET_STATES = ("writing", "swapping", "complete")
STAGED = ".defr-"  # staged file of NAME: ``.NAME.defr-PID-TOKEN.SUFFIX`` (a folder: ``.NAME.defr-PID-TOKEN``)


class OutputRefused(DefrError, ValueError):
    """An output a command will not write (it would destroy an input, another output, a device, or a
    file defr did not write); the message names it and what to do."""


def file_record(path: Path, token: str | None) -> dict | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode):  # a folder's size and mtime change with what is put in it: its inode says
        return {"ino": st.st_ino, "folder": True, "set": token}
    return {"ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "set": token}


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    try:
        data = read_json(path, max_bytes=MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        return {"format": MANIFEST_FORMAT, "files": {}, "sets": {}}
    except (OSError, ValueError) as e:
        raise OutputRefused(f"{path}: unreadable defr output manifest ({e}); remove it") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise OutputRefused(f"{path}: not a {MANIFEST_FORMAT} manifest; remove it")
    data.setdefault("files", {})
    data.setdefault("sets", {})
    if (why := _malformed(data)) is not None:
        raise OutputRefused(f"{path}: malformed defr output manifest ({why}); remove it")
    return data


def _plain_name(name: object) -> bool:
    """Whether ``name`` is one entry of the folder: recovery removes and renames what the manifest names, so
    a name that leads elsewhere (``../x``, an absolute path) would let a damaged manifest destroy other files."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\0" not in name


def _is_int(value: object, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _malformed_set(token: str, s: object) -> str | None:
    if not isinstance(s, dict):
        return f"set {token!r} is not an object"
    if s.get("state") not in SET_STATES:
        return f"set {token!r}: state {s.get('state')!r} is not one of {', '.join(SET_STATES)}"
    if not _is_int(s.get("pid"), 1) or not isinstance(s.get("host", HOST), str):
        return f"set {token!r}: pid {s.get('pid')!r} is not a process id"  # pid 0 or -1 would signal a group
    if not isinstance(s.get("files"), dict) or not isinstance(s.get("folders", {}), dict):
        return f"set {token!r}: files is not an object"
    for name, staged in s["files"].items():
        if not _plain_name(name) or not (staged in (None, "") or (_plain_name(staged) and STAGED in staged)):
            return f"set {token!r}: entry {name!r} → {staged!r} is not a file of this folder"
    if not all(name in s["files"] and _is_int(ino) for name, ino in s.get("folders", {}).items()):
        return f"set {token!r}: folders do not match its files"
    return None


def _malformed(data: dict) -> str | None:
    """What is wrong with a manifest's fields, or None: it drives removals and renames, so it is checked whole."""
    if not isinstance(data["files"], dict) or not isinstance(data["sets"], dict):
        return "files and sets must be objects"
    for name, record in data["files"].items():
        if not _plain_name(name) or not isinstance(record, dict) or not _is_int(record.get("ino")):
            return f"file {name!r}: not a file record of this folder"
        if not isinstance(record.get("set"), (str, type(None))):
            return f"file {name!r}: set is not a string"
    for token, s in data["sets"].items():
        if (why := _malformed_set(token, s)) is not None:
            return why
    return None


@contextmanager
def manifest(folder: Path) -> Iterator[dict]:
    """The folder's manifest, read and written back under an exclusive ``flock`` of the folder."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        m = read_manifest(folder)
        yield m
        for name in [n for n in m["files"] if not (folder / n).exists()]:
            del m["files"][name]
        if m["files"] or m["sets"]:
            write_json(m, folder / MANIFEST, indent=1)
        else:  # nothing of defr's here (a run that failed before writing): no manifest left behind
            (folder / MANIFEST).unlink(missing_ok=True)
    finally:
        os.close(fd)  # releases the lock


def refuse_busy(m: dict, paths: dict[str, Path]) -> None:
    """``OutputRefused`` when a set still being written holds one of ``paths`` (by name in the folder)."""
    for s in m["sets"].values():
        if s["state"] == "complete":
            continue
        for name in s["files"]:
            if name in paths:
                host = "" if s.get("host", HOST) == HOST else f" on {s['host']}"
                gone = f"; if it will never run again, remove its set from {MANIFEST} there" if host else ""
                raise OutputRefused(
                    f"{paths[name]} is being written by another defr process (pid {s['pid']}{host}): wait for it "
                    f"to finish or write elsewhere{gone}"
                )


def writer_alive(s: dict) -> bool:
    """Whether the writer of set ``s`` may still run: its process on this machine, or any writer on another
    machine (a folder shared over the network: its pid says nothing here; that machine's next run cleans up)."""
    return s.get("host", HOST) != HOST or process_alive(s["pid"])


def recover(folder: Path, m: dict) -> None:
    """Sets of processes that no longer run: a staging one's files removed, a swapping one finished,
    a streaming one's files recorded as defr's; then staged files no set owns are removed."""
    for token, s in list(m["sets"].items()):
        if s["state"] == "complete" or writer_alive(s):
            continue
        if s["state"] == "swapping":
            try:
                swap(folder, m, token)
            except OSError as e:
                abandon(folder, m, token, e)
            continue
        for name, staged in s["files"].items():
            if staged is None:  # a stream writes its targets: what it left is defr's
                if (record := file_record(folder / name, token)) is not None:
                    m["files"][name] = record
            else:
                remove_staged(folder / staged)
        del m["sets"][token]
    owned = {staged for s in m["sets"].values() for staged in s["files"].values() if staged}
    for path in folder.glob(f".*{STAGED}*"):
        pid = path.name.split(STAGED, 1)[1].split("-", 1)[0]
        if path.name not in owned and pid.isdigit() and not process_alive(int(pid)):
            remove_staged(path)


def abandon(folder: Path, m: dict, token: str, error: OSError) -> None:
    """A dead run's swap that fails again (the file system refuses it for good): forget the set, so that it
    does not block the folder for ever, and say which outputs may now mix its files with older ones (its
    staged files no set owns are then removed as any dead run's)."""
    dead = m["sets"].pop(token)
    names = ", ".join(str(folder / name) for name in dead["files"])
    logging.getLogger(__name__).warning(
        f"defr: could not finish an earlier run's output set (pid {dead['pid']}) in {folder} "
        f"({error.strerror or error}); dropped it: check {names}, which may mix its files with older ones"
    )


def swap(folder: Path, m: dict, token: str) -> None:
    """Rename a set's staged files onto their targets (a missing one: the target goes), record them,
    mark the set complete; the other complete sets whose files are all gone are forgotten."""
    s = m["sets"][token]
    for name, staged in s["files"].items():
        target = folder / name
        if staged == "":  # a declared output the run did not write: no old file beside the new set
            target.unlink(missing_ok=True)
        elif name in s.get("folders", {}):
            swap_folder(folder / staged, target, s["folders"][name])
        elif staged is not None and (folder / staged).exists():  # else renamed in before a kill
            os.replace(folder / staged, target)
        if (record := file_record(target, token)) is not None:
            m["files"][name] = record
    s["state"] = "complete"
    live = {r["set"] for r in m["files"].values()}
    for other, t in list(m["sets"].items()):
        if t["state"] == "complete" and other not in live and other != token:
            del m["sets"][other]


def swap_folder(staged: Path, target: Path, staged_ino: int) -> None:
    """Exchange a staged folder with its target and remove the old one; after a kill, only what is left."""
    if not staged.is_dir():
        return  # swapped in and the old folder removed before a kill
    with contextlib.suppress(FileNotFoundError):
        if os.stat(target).st_ino == staged_ino:
            shutil.rmtree(staged, ignore_errors=True)  # exchanged before a kill: ``staged`` holds the old folder
            return
    replace_dir(staged, target)


def finish_staged(path: Path) -> None:
    """A staged file made durable and given any other output's permissions before it is swapped in."""
    if not path.exists():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, 0o666 & ~umask())


def remove_staged(path: Path) -> None:
    try:
        mode = os.lstat(path).st_mode
    except OSError:  # gone, or a name no file can have (too long: an earlier version's staging of a long name)
        return
    if stat.S_ISDIR(mode):  # a staged folder
        shutil.rmtree(path, ignore_errors=True)
    elif stat.S_ISREG(mode) or stat.S_ISLNK(mode):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
