"""Files and folders are never half-written: written beside their final name, then renamed (a leaf).

- ``atomic_path``: one file, written to a temporary name in the same folder, renamed over the
  target when the block ends (removed on error).
- ``replace_dir``: a folder built beside the target (``defr.files.Folder`` stages it), then swapped
  in with one ``renameat2(RENAME_EXCHANGE)`` (Linux ≥ 3.15; a kill at any instant leaves the old
  set or the new one), the old set removed after; ``carry_over`` links the old folder's other
  entries into the new one first. ``clean_stale_staging`` removes the ``.NAME.KIND-PID-…`` staging
  folders that killed runs of earlier versions left behind (their process is gone).

Files and folders get the permissions of any other program's output (0666 / 0777 minus the
umask), not the owner-only ones of ``tempfile``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from defr.jsonio import dump_json

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """A temporary name beside ``path`` to write to: renamed onto ``path`` when the block ends, removed on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(obj, path: str | os.PathLike, indent: int | None = None) -> Path:
    """``obj`` as JSON at ``path``, atomically, through ``defr.jsonio.dump_json`` (numpy scalars become
    floats; a NaN or Infinity is refused naming its key path, before anything is written)."""
    text = dump_json(obj, str(path), indent=indent)
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)
    return Path(path)


def staging_prefix(target: Path, kind: str) -> str:
    """Name prefix of the staging folders of ``target``: ``.NAME.KIND-``; the process id follows."""
    return f".{target.name}.{kind}-"


def clean_stale_staging(target: str | os.PathLike, kind: str) -> list[Path]:
    """Remove the staging folders of ``target`` whose process no longer runs (a killed run's)."""
    target = Path(target)
    prefix = staging_prefix(target, kind)
    removed = []
    if not target.parent.is_dir():
        return removed
    for folder in target.parent.glob(f"{prefix}*"):
        pid = folder.name[len(prefix) :].split("-", 1)[0]
        if not pid.isdigit() or process_alive(int(pid)):
            continue
        if folder.is_symlink():  # a symlinked target that an exchange once swapped out: the link, not its folder
            folder.unlink()
        elif folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
        else:
            continue
        removed.append(folder)
    return removed


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (this one included; another user's counts as running): what tells a
    dead writer's leftovers from a live one's."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def replace_dir(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put folder ``new`` in place of ``target`` (which may not exist), then delete the old one.

    With an existing target the two are exchanged atomically (``renameat2(RENAME_EXCHANGE)``):
    readers and a kill at any instant see the old folder or the new one, never a mix. Where the
    file system cannot exchange, the target is renamed away first (a kill between the two renames
    leaves no target, and both folders beside it).
    """
    new, target = Path(new), Path(target)
    if not target.exists():
        os.rename(new, target)
        return
    if _exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # ``new`` holds the old set now
        return
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-{os.getpid()}-"))
    os.rename(target, old / target.name)
    os.rename(new, target)
    shutil.rmtree(old, ignore_errors=True)


def carry_over(old: str | os.PathLike, new: str | os.PathLike) -> None:
    """Hard-link (or copy) the entries of folder ``old`` that folder ``new`` does not hold into ``new``
    (folders as trees of hard links, symbolic links as links): what a folder swap keeps of the old one."""
    old, new = Path(old), Path(new)
    if not old.is_dir():
        return
    for path in old.iterdir():
        target = new / path.name
        if target.exists() or target.is_symlink():
            continue
        if path.is_symlink():
            os.symlink(os.readlink(path), target)
        elif path.is_dir():
            shutil.copytree(path, target, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(path, target)


def _link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap the paths ``a`` and ``b``; False where the system cannot."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    result = libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, f"cannot exchange {a} and {b}: {os.strerror(code)}")
