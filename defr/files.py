"""The output seam: what a command writes, declared with what it reads, checked, then written as one set
(``OutputSet``; docs/architecture.md, "What a command writes"), and ``write_with`` for a file a library
writes itself (``torch.save``). Both build on ``defr.atomic`` (a file written beside its final name, then
renamed; folders swapped whole), whose names are importable from here too.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from defr.atomic import (
    atomic_path,
    clean_stale_staging,
    process_alive,
    replace_dir,
    staging_dir,
    staging_prefix,
    umask,
    write_json,
)
from defr.errors import DefrError
from defr.jsonio import read_json

__all__ = [  # the atomic writes are re-exported: ``defr.files`` is where callers have always found them
    "OutputRefused",
    "OutputSet",
    "WriteError",
    "atomic_path",
    "clean_stale_staging",
    "process_alive",
    "replace_dir",
    "staging_dir",
    "staging_prefix",
    "umask",
    "write_error",
    "write_json",
    "write_with",
]

MANIFEST = ".defr-outputs.json"
MANIFEST_FORMAT = "defr-outputs/1"
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG})
_STAGED = ".defr-"  # staged file of NAME: ``.NAME.defr-PID-TOKEN.SUFFIX``


class OutputRefused(DefrError, ValueError):
    """An output a command will not write (it would destroy an input, another output, a device, or a
    file defr did not write); the message names it and what to do."""


class WriteError(DefrError, OSError):
    """An output that could not be written (disk full, I/O error); nothing half-written is left."""


def write_error(e: OSError, what: str) -> OSError:
    """``e`` as a one-line ``WriteError`` naming ``what`` when it is a disk error (ENOSPC, EDQUOT, EIO,
    EFBIG); else ``e`` itself."""
    if isinstance(e, WriteError) or e.errno not in DISK_ERRNOS:
        return e
    error = WriteError(f"cannot write {what}: {e.strerror or e}; nothing half-written is left")
    error.errno = e.errno  # (a strerror too would make str() "[Errno N] ...")
    return error


class _RecordingFile:
    """A binary file whose first write error is kept: libraries that turn it into their own error
    (torch.save's ``unexpected pos``) cannot hide it."""

    def __init__(self, f):
        self._f = f
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name):
        return getattr(self._f, name)


def write_with(path: str | os.PathLike, save: Callable) -> Path:
    """``save(f)`` into a binary file written atomically at ``path``; a write error inside ``save``
    surfaces as that ``OSError`` (a disk error as ``WriteError``) even when ``save`` re-raises it as
    something else (torch.save does)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        f = _RecordingFile(raw)
        try:
            save(f)
            raw.flush()
        except OSError as e:
            raise write_error(e, str(path)) from None
        except Exception:
            if f.error is not None:
                raise write_error(f.error, str(path)) from None
            raise
    return path


def _kind(mode: int) -> str | None:
    """What a non-regular file is, in words (None for a regular file)."""
    for test, words in (
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return words
    return None if stat.S_ISREG(mode) else "not a regular file"


def _resolve_output(path: Path, label: str) -> Path:
    """The file an output path writes: a new path, a regular file, or a symlink's target (written
    through); ``OutputRefused`` for anything else."""
    try:
        st = os.stat(path)  # follows symlinks: /proc/self/fd/1 is the pipe or terminal behind it
    except FileNotFoundError:
        if path.is_symlink():
            raise OutputRefused(
                f"{label} {path} is a symlink to a missing file: give the file itself or remove the link"
            ) from None
        return Path(os.path.realpath(path.parent)) / path.name
    except NotADirectoryError:
        raise OutputRefused(f"{label} {path}: its folder {path.parent} is not a directory") from None
    kind = _kind(st.st_mode)
    if kind is not None:
        raise OutputRefused(
            f"{label} {path} is {kind}, not a regular file: defr writes outputs only to regular files or new paths"
        )
    return Path(os.path.realpath(path))


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


@dataclass(frozen=True)
class _Output:
    label: str  # how the user knows it: "--out", "the summary"
    path: Path  # as given
    target: Path  # the file written (a symlink's target)
    default: bool  # named by defr, not by the user


def _format_label(label: str) -> str:
    return label if label.startswith("-") else f"the {label} output"


class OutputSet:
    """The outputs of one command run: declared with its inputs, checked, then written as one set.

    Checked when made and when entered (before the command does any work), ``OutputRefused`` for an
    output that:

    - is the same file as an input or as another output, by whatever name (a symlink, a hard link,
      a relative path: compared by device and inode, or by real path for new files);
    - exists and is not a regular file (a device, a FIFO, a socket, a folder). A symlink is written
      through: its target is replaced, the link stays; a symlink to a missing file is refused;
    - is default-named (``defaults``: a name the user did not give) and exists but was not written
      by defr (no matching record in the folder's manifest), unless ``overwrite``.

    ``with OutputSet(...) as paths:`` takes the outputs (``OutputRefused`` if a live defr process is
    writing one of them: the second writer is refused at once) and gives, by label, a staged path
    beside each target to write (``.NAME.defr-PID-TOKEN.SUFFIX``: same folder, same suffix). When the
    block ends without error the set is swapped in: the manifest first says ``"swapping"`` (the
    journal), then each staged file is renamed onto its target, then the manifest records the files
    and says ``"complete"``; a declared output that was not written is removed (never an old file
    beside a new set). On error the staged files are removed and the old set stays as it was; a
    disk error becomes one-line ``WriteError``. A run killed while staging leaves staged files that
    the next run into the folder removes (their pid no longer runs); one killed while swapping
    leaves the manifest saying ``"swapping"`` and the next run finishes the swap (every staged file
    was whole before the journal was written).

    ``stream=True``: the block writes the targets themselves, as it goes (``defr video``: lines are
    readable while the run goes on; its own summary says whether the run completed); the set is
    still checked, taken, and recorded as defr's when the block ends.

    Each output folder holds the manifest ``.defr-outputs.json`` (``MANIFEST_FORMAT``): the files
    defr wrote there (inode, size, mtime: a file changed since is no longer defr's) and the sets
    being written or last written, with their state and pid. It is read and updated under an
    exclusive ``flock`` of the folder.
    """

    def __init__(
        self,
        outputs: dict[str, str | os.PathLike | None],
        inputs: Iterable[str | os.PathLike | None] = (),
        defaults: Iterable[str] = (),
        overwrite: bool = False,
        stream: bool = False,
    ):
        default_labels = set(defaults)
        self.outputs: list[_Output] = []
        for label, value in outputs.items():
            if value is None:
                continue
            path = Path(value)
            target = _resolve_output(path, _format_label(label))
            self.outputs.append(_Output(label, path, target, label in default_labels))
        self.stream = stream
        self.token = f"{os.getpid()}-{os.urandom(4).hex()}"
        self.overwrite = overwrite
        self._check_distinct()
        self._check_inputs([Path(p) for p in inputs if p is not None and "://" not in os.fspath(p)])
        self._staged: dict[str, Path] = {}
        self._claimed: list[Path] = []

    def _check_distinct(self) -> None:
        for i, a in enumerate(self.outputs):
            for b in self.outputs[i + 1 :]:
                same_inode = a.target.exists() and _identity(a.target) == _identity(b.target)
                if a.target == b.target or same_inode:
                    raise OutputRefused(
                        f"{_format_label(a.label)} and {_format_label(b.label)} are one file ({a.path}): "
                        "give each output its own file"
                    )

    def _check_inputs(self, inputs: list[Path]) -> None:
        ids = {}
        for p in inputs:
            if (key := _identity(p)) is not None:
                ids.setdefault(key, p)
        for out in self.outputs:
            source = ids.get(_identity(out.target)) if out.target.exists() else None
            if source is not None:
                raise OutputRefused(
                    f"{_format_label(out.label)} {out.path} is the input {source}: writing it would destroy "
                    "the input; write the output elsewhere"
                )

    def _check_defaults(self, m: dict, outs: list[_Output]) -> None:
        for out in outs:
            record = m["files"].get(out.target.name)
            ours = record is not None and record == _file_record(out.target, record.get("set"))
            if out.default and out.target.exists() and not ours and not self.overwrite:
                raise OutputRefused(
                    f"{out.path} ({out.label}, a name defr chose) exists and was not written by defr: move it, "
                    "name that output yourself, or pass --overwrite"
                )

    @property
    def targets(self) -> dict[str, Path]:
        """The files written, by label."""
        return {o.label: o.target for o in self.outputs}

    def _folders(self) -> dict[Path, list[_Output]]:
        by_folder: dict[Path, list[_Output]] = {}
        for out in self.outputs:
            by_folder.setdefault(out.target.parent, []).append(out)
        return dict(sorted(by_folder.items()))

    def __enter__(self) -> dict[str, Path]:
        try:
            for folder, outs in self._folders().items():
                folder.mkdir(parents=True, exist_ok=True)
                with _manifest(folder) as m:
                    _recover(folder, m)
                    _refuse_busy(m, outs)
                    self._check_defaults(m, outs)
                    files = {o.target.name: None if self.stream else self._stage_name(o) for o in outs}
                    m["sets"][self.token] = {"pid": os.getpid(), "state": "writing", "files": files}
                self._claimed.append(folder)
        except BaseException:
            self._release()
            raise
        for out in self.outputs:
            self._staged[out.label] = out.target if self.stream else out.target.parent / self._stage_name(out)
        return dict(self._staged)

    def _stage_name(self, out: _Output) -> str:
        return f".{out.target.name}{_STAGED}{self.token}{out.target.suffix}"

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None and not self.stream:  # a stream's files are the run's whatever stopped it
            self._release()
            if isinstance(exc, OSError) and (error := write_error(exc, self._what())) is not exc:
                raise error from None
            return
        try:
            self._commit()
        except OSError as e:
            if exc is not None:  # a stream stopped by an error: that error is the news
                return
            raise write_error(e, self._what()) from None

    def _what(self) -> str:
        return ", ".join(str(o.path) for o in self.outputs)

    def _release(self) -> None:
        """Drop this set: its staged files removed, its claim on each folder's manifest dropped."""
        for path in self._staged.values():
            if not self.stream:
                _remove_staged(path)
        for folder in self._claimed:
            with contextlib.suppress(OSError), _manifest(folder) as m:
                m["sets"].pop(self.token, None)
        self._claimed = []

    def _commit(self) -> None:
        try:
            if not self.stream:
                for path in self._staged.values():
                    _finish_staged(path)
            for folder in self._claimed:  # the journal: from here on the set is completed, even after a kill
                with _manifest(folder) as m:
                    s = m["sets"][self.token]
                    s["state"] = "swapping"
                    for name, staged in s["files"].items():
                        if staged is not None and not (folder / staged).exists():
                            s["files"][name] = ""  # declared, not written: its old file goes
        except BaseException:
            self._release()
            raise
        for folder in self._claimed:
            with _manifest(folder) as m:
                _swap(folder, m, self.token)
        self._claimed = []


def _file_record(path: Path, token: str | None) -> dict | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {"ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "set": token}


def _read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    try:
        data = read_json(path)
    except FileNotFoundError:
        return {"format": MANIFEST_FORMAT, "files": {}, "sets": {}}
    except (OSError, ValueError) as e:
        raise OutputRefused(f"{path}: unreadable defr output manifest ({e}); remove it") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise OutputRefused(f"{path}: not a {MANIFEST_FORMAT} manifest; remove it")
    data.setdefault("files", {})
    data.setdefault("sets", {})
    return data


@contextmanager
def _manifest(folder: Path) -> Iterator[dict]:
    """The folder's manifest, read and written back under an exclusive ``flock`` of the folder."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        m = _read_manifest(folder)
        yield m
        for name in [n for n in m["files"] if not (folder / n).exists()]:
            del m["files"][name]
        if m["files"] or m["sets"]:
            write_json(m, folder / MANIFEST, indent=1)
        else:  # nothing of defr's here (a run that failed before writing): no manifest left behind
            (folder / MANIFEST).unlink(missing_ok=True)
    finally:
        os.close(fd)  # releases the lock


def _refuse_busy(m: dict, outs: list[_Output]) -> None:
    names = {o.target.name: o for o in outs}
    for s in m["sets"].values():
        if s["state"] == "complete":
            continue
        for name in s["files"]:
            if name in names:
                raise OutputRefused(
                    f"{names[name].path} is being written by another defr process (pid {s['pid']}): wait for it "
                    "to finish or write elsewhere"
                )


def _recover(folder: Path, m: dict) -> None:
    """Sets of processes that no longer run: a staging one's files removed, a swapping one finished,
    a streaming one's files recorded as defr's; then staged files no set owns are removed."""
    for token, s in list(m["sets"].items()):
        if s["state"] == "complete" or process_alive(s["pid"]):
            continue
        if s["state"] == "swapping":
            _swap(folder, m, token)
            continue
        for name, staged in s["files"].items():
            if staged is None:  # a stream writes its targets: what it left is defr's
                if (record := _file_record(folder / name, token)) is not None:
                    m["files"][name] = record
            else:
                _remove_staged(folder / staged)
        del m["sets"][token]
    owned = {staged for s in m["sets"].values() for staged in s["files"].values() if staged}
    for path in folder.glob(f".*{_STAGED}*"):
        pid = path.name.split(_STAGED, 1)[1].split("-", 1)[0]
        if path.name not in owned and pid.isdigit() and not process_alive(int(pid)):
            _remove_staged(path)


def _swap(folder: Path, m: dict, token: str) -> None:
    """Rename a set's staged files onto their targets (a missing one: the target goes), record them,
    mark the set complete; the other complete sets whose files are all gone are forgotten."""
    s = m["sets"][token]
    for name, staged in s["files"].items():
        target = folder / name
        if staged == "":  # a declared output the run did not write: no old file beside the new set
            target.unlink(missing_ok=True)
        elif staged is not None and (folder / staged).exists():  # else renamed in before a kill
            os.replace(folder / staged, target)
        if (record := _file_record(target, token)) is not None:
            m["files"][name] = record
    s["state"] = "complete"
    live = {r["set"] for r in m["files"].values()}
    for other, t in list(m["sets"].items()):
        if t["state"] == "complete" and other not in live and other != token:
            del m["sets"][other]


def _finish_staged(path: Path) -> None:
    """A staged file made durable and given any other output's permissions before it is swapped in."""
    if not path.exists():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, 0o666 & ~umask())


def _remove_staged(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError, IsADirectoryError):
        if path.is_symlink() or path.is_file():
            path.unlink()
