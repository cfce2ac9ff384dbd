"""The output seam: what a command writes, declared with what it reads, checked, then written as one set
(``OutputSet``; docs/architecture.md, "What a command writes"), and ``write_with`` for a file a library
writes itself (``torch.save``). Both build on ``defr.atomic`` (a file written beside its final name, then
renamed; folders swapped whole), whose names are importable from here too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from defr.atomic import (
    atomic_path,
    carry_over,
    clean_stale_staging,
    process_alive,
    replace_dir,
    staging_prefix,
    umask,
    write_json,
)
from defr.errors import DefrError
from defr.output_manifest import (
    HOST,
    MANIFEST,
    MANIFEST_FORMAT,
    STAGED,
    OutputRefused,
    file_record,
    finish_staged,
    manifest,
    recover,
    refuse_busy,
    remove_staged,
    swap,
)

__all__ = [  # the atomic writes are re-exported: ``defr.files`` is where callers have always found them
    "MANIFEST",
    "MANIFEST_FORMAT",
    "Folder",
    "OutputRefused",
    "OutputSet",
    "WriteError",
    "atomic_path",
    "clean_stale_staging",
    "process_alive",
    "replace_dir",
    "staging_prefix",
    "umask",
    "write_error",
    "write_json",
    "write_with",
]

NAME_MAX = 255  # bytes of one file name (Linux, macOS)
# a staged name leaves room for the temporary name a writer may put beside it (atomic_path: .NAME.XXXXXXXX.tmp)
STAGED_NAME_MAX = NAME_MAX - 16
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG})


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


def _resolve_output(path: Path, label: str, folder: bool) -> Path:
    """The file (or ``folder``) an output path writes: a new path, a regular file (a folder), or a
    symlink's target (written through); ``OutputRefused`` for anything else."""
    if os.fspath(path) == "-":  # the usual name of stdout: a file called "-" would surprise whoever meant that
        raise OutputRefused(
            f"{label} -: defr does not write outputs to stdout; give a file name (for a file named -, its full path)"
        )
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
    if folder and kind != "a folder":
        raise OutputRefused(f"{label} {path} is {kind or 'a regular file'}, not a folder: give a folder or a new path")
    if kind is not None and not folder:
        raise OutputRefused(
            f"{label} {path} is {kind}, not a regular file: defr writes outputs only to regular files or new paths"
        )
    real = Path(os.path.realpath(path))
    if folder and os.path.ismount(real):  # a folder output is swapped whole by a rename, which a mount point refuses
        raise OutputRefused(
            f"{label} {path} is a mount point: defr swaps a folder output in whole, which a mounted folder cannot "
            "be; give a folder inside it"
        )
    return real


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


@dataclass(frozen=True)
class Folder:
    """A folder output, ``OutputSet({"OUT": Folder(path, ...)})``: staged as a folder beside ``path``
    and swapped in whole (``replace_dir``) with the set. The entries of the old folder that the new one
    does not hold are carried over (hard links): a run replaces only the entries it writes.

    entries: the names the run writes in it (an input at or under one of them is refused); None: any
    input inside the folder is refused. guard: an existing folder that is not empty and that defr did
    not write (no record in the manifest, no ``marker`` file in it) is refused unless ``overwrite``.
    marker: a file that makes a folder defr's without a manifest record (a set an earlier version wrote).
    """

    path: str | os.PathLike
    entries: tuple[str, ...] | None = None
    guard: bool = True
    marker: str | None = None


@dataclass(frozen=True)
class _Output:
    label: str  # how the user knows it: "--out", "the summary"
    path: Path  # as given
    target: Path  # the file written (a symlink's target)
    default: bool  # named by defr, not by the user
    folder: Folder | None = None  # a folder output's settings


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
      by defr (no matching record in the folder's manifest), unless ``overwrite``;
    - is a ``Folder`` and exists as something else, or holds an input (``Folder.entries``), or is
      guarded and not defr's (``Folder``).

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

    A ``Folder`` output is staged as a folder (``.NAME.defr-PID-TOKEN``, made on entering) and swapped
    in by the same journal: its staged folder's inode is recorded with ``"swapping"``, so a run killed
    after the exchange and before the old folder was removed is told from one killed before it.

    ``stream=True``: the block writes the targets themselves, as it goes (``defr video``: lines are
    readable while the run goes on; its own summary says whether the run completed); the set is
    still checked, taken, and recorded as defr's when the block ends.

    Each output folder holds the manifest ``.defr-outputs.json`` (``MANIFEST_FORMAT``): the files
    defr wrote there (inode, size, mtime: a file changed since is no longer defr's; a folder: its
    inode) and the sets being written or last written, with their state, pid and host (a writer on
    another machine counts as live). It is read and updated under an exclusive ``flock`` of the folder.
    """

    def __init__(
        self,
        outputs: dict[str, str | os.PathLike | Folder | None],
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
            folder = value if isinstance(value, Folder) else None
            path = Path(folder.path if folder else value)
            target = _resolve_output(path, _format_label(label), folder is not None)
            if folder is not None:
                _check_folder_entries(target, folder, _format_label(label))
            self.outputs.append(_Output(label, path, target, label in default_labels, folder))
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
            if out.folder is not None:
                _check_folder_inputs(out, inputs)
            source = ids.get(_identity(out.target)) if out.target.exists() else None
            if source is not None:
                raise OutputRefused(
                    f"{_format_label(out.label)} {out.path} is the input {source}: writing it would destroy "
                    "the input; write the output elsewhere"
                )

    def _check_defaults(self, m: dict, outs: list[_Output]) -> None:
        for out in outs:
            if out.folder is not None:
                if out.folder.guard and not self.overwrite and _foreign_folder(out, m):
                    raise OutputRefused(_foreign_folder_message(out))
                continue
            record = m["files"].get(out.target.name)
            ours = record is not None and record == file_record(out.target, record.get("set"))
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
                self._claim(folder, outs)
            for out in self.outputs:
                staged = out.target if self.stream else out.target.parent / self._stage_name(out)
                self._staged[out.label] = staged
                if out.folder is not None:
                    staged.mkdir(exist_ok=self.stream)  # 0777 minus the umask, as any folder
        except BaseException:
            self._release()
            raise
        return dict(self._staged)

    def _claim(self, folder: Path, outs: list[_Output]) -> None:
        """Record this set as being written in ``folder``'s manifest (after recovering what dead runs left);
        ``OutputRefused`` naming the outputs for a folder that cannot be written (read-only, not ours)."""
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with manifest(folder) as m:
                recover(folder, m)
                refuse_busy(m, {o.target.name: o.path for o in outs})
                self._check_defaults(m, outs)
                files = {o.target.name: None if self.stream else self._stage_name(o) for o in outs}
                m["sets"][self.token] = {"pid": os.getpid(), "host": HOST, "state": "writing", "files": files}
        except OSError as e:  # else the message names the manifest's temporary file, not what the user gave
            if (error := write_error(e, ", ".join(str(o.path) for o in outs))) is not e:
                raise error from None
            raise OutputRefused(
                f"{', '.join(str(o.path) for o in outs)}: cannot write into {folder} ({e.strerror or e})"
            ) from None
        self._claimed.append(folder)

    def _stage_name(self, out: _Output) -> str:
        """``.NAME.defr-PID-TOKEN.SUFFIX``, NAME shortened so that it and a writer's temporary name beside it fit
        a file name's 255 bytes (a target of 240 bytes is legal; its staged name must be too)."""
        suffix = out.target.suffix if len(os.fsencode(out.target.suffix)) <= 32 else ""
        tail = f"{STAGED}{self.token}{suffix}"
        name = out.target.name
        while len(os.fsencode(f".{name}{tail}")) > STAGED_NAME_MAX:
            name = name[:-1]
        return f".{name}{tail}"

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
                remove_staged(path)
        for folder in self._claimed:
            with contextlib.suppress(OSError), manifest(folder) as m:
                m["sets"].pop(self.token, None)
        self._claimed = []

    def _commit(self) -> None:
        try:
            if not self.stream:
                for out in self.outputs:
                    if out.folder is not None:  # the old folder's other entries stay
                        carry_over(out.target, self._staged[out.label])
                    else:
                        finish_staged(self._staged[out.label])
            for folder in self._claimed:  # the journal: from here on the set is completed, even after a kill
                with manifest(folder) as m:
                    s = m["sets"][self.token]
                    s["state"] = "swapping"
                    for name, staged in s["files"].items():
                        if staged is not None and not (folder / staged).exists():
                            s["files"][name] = ""  # declared, not written: its old file goes
                        elif staged is not None and (folder / staged).is_dir():
                            s.setdefault("folders", {})[name] = os.stat(folder / staged).st_ino
        except BaseException:
            self._release()
            raise
        for folder in self._claimed:
            with manifest(folder) as m:
                swap(folder, m, self.token)
        self._claimed = []


def _check_folder_inputs(out: _Output, inputs: list[Path]) -> None:
    """``OutputRefused`` for an input that is the folder, or lies in an entry the run writes there."""
    for p in inputs:
        real = Path(os.path.realpath(p))
        if not real.is_relative_to(out.target):
            continue
        inside = real.relative_to(out.target).parts
        if not inside or out.folder.entries is None or inside[0] in out.folder.entries:
            raise OutputRefused(
                f"{_format_label(out.label)} {out.path} {'holds' if inside else 'is'} the input {p}: writing it "
                "would destroy the input; write the output elsewhere"
            )


def _check_folder_entries(target: Path, folder: Folder, label: str) -> None:
    """``OutputRefused`` for a device, FIFO or socket where the run writes an entry of the folder (it would
    be dropped with the old folder, a FIFO's reader starved). A symlink there is replaced, its target kept."""
    for name in folder.entries or ():
        try:
            mode = os.lstat(target / name).st_mode
        except OSError:
            continue
        kind = None if stat.S_ISLNK(mode) else _kind(mode)
        if kind not in (None, "a folder"):
            raise OutputRefused(
                f"{label} {target / name} is {kind}, not a regular file: defr writes outputs only to regular "
                "files or new paths"
            )


def _foreign_folder(out: _Output, m: dict) -> bool:
    """Whether a ``Folder`` output exists, is not empty, and was not written by defr."""
    if not out.target.is_dir() or next(out.target.iterdir(), None) is None:
        return False
    record = m["files"].get(out.target.name)
    if record is not None and record == file_record(out.target, record.get("set")):
        return False
    return not (out.folder.marker and (out.target / out.folder.marker).is_file())


def _foreign_folder_message(out: _Output) -> str:
    held = sorted(p.name for p in out.target.iterdir())
    shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
    replaced = f"only {', '.join(out.folder.entries)}" if out.folder.entries else "the entries this run writes"
    return (
        f"{out.path}: not empty ({shown}) and not written by defr; choose another folder, or --overwrite "
        f"to replace {replaced} there and keep everything else"
    )
