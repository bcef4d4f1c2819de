"""Moving a finished file, and its sidecar, to the done or failed folder.

The source is never removed before its copy is safe: a same-filesystem move is a
rename; across filesystems the file is copied, fsynced, checked and only then
unlinked. No move ever replaces a file already at its destination. Each step can
be repeated after a crash: a move whose source is gone and whose destination is
complete counts as done.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import pwd
import shutil
import stat
from pathlib import Path
from typing import Any

from .errors import IngestdError

DONE_SUFFIX = ".ingestd.json"
ERROR_SUFFIX = ".error.json"


class FilingError(IngestdError):
    """The file could not be moved or its report written; the source is still where it was."""


# The longest report suffix: every name ingestd files must leave room for it.
_REPORT_ROOM = max(len(DONE_SUFFIX), len(ERROR_SUFFIX))


def why_unmovable(path: Path, file_st: os.stat_result) -> str | None:
    """Why this process may not move ``path`` (whose stat is ``file_st``) out of its folder, and the fix; None when
    it may."""
    folder = path.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        return "the folder is not writable for it; make it writable for ingestd, e.g. `chmod g+w` with the ingest group"
    try:
        folder_st = os.stat(folder)
    except OSError:
        return None  # gone meanwhile: the caller finds that out for itself
    # In a sticky folder (chmod +t) only the file's owner, the folder's owner or a process with CAP_FOWNER may.
    euid = os.geteuid()
    if folder_st.st_mode & stat.S_ISVTX and euid not in (folder_st.st_uid, file_st.st_uid) and not _has_cap_fowner():
        return (f"the folder is sticky (chmod +t) and {path.name} belongs to user {_user(file_st.st_uid)}, so only"
                " its owner or the folder's may move it; clear the sticky bit (`chmod -t`) or make ingestd the"
                " folder's owner")
    return None


def _has_cap_fowner() -> bool:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 3))  # CAP_FOWNER is capability 3
    except OSError:
        pass
    return os.geteuid() == 0


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} ({uid})"
    except KeyError:
        return str(uid)


def destination(dest_dir: Path, relpath: str, job_id: str) -> Path:
    """Where a file goes: the same relative path, or a name tagged with the job id if that (or its report) is taken."""
    target = Path(dest_dir) / relpath
    if not any(_taken(p) for p in (target, report_path(target, failed=False), report_path(target, failed=True))):
        return target
    tag = f".{job_id[:8]}{target.suffix}"
    stem = _fit(target.parent, target.stem, len(os.fsencode(tag)))
    return target.with_name(stem + tag)


def report_path(target: Path, *, failed: bool) -> Path:
    """The report beside ``target``; a name too long for one gets a shortened report name that still starts like it."""
    suffix = ERROR_SUFFIX if failed else DONE_SUFFIX
    return target.with_name(_fit(target.parent, target.name, _REPORT_ROOM) + suffix)


def _temporary(path: Path, suffix: str) -> Path:
    """A hidden name beside ``path`` for a file being written, short enough for the filesystem."""
    return path.with_name("." + _fit(path.parent, path.name, len(suffix) + 1) + suffix)


def _taken(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _name_max(directory: Path) -> int:
    for candidate in (directory, *directory.parents):
        try:
            return os.pathconf(candidate, "PC_NAME_MAX")
        except OSError:
            continue
    return 255


def _fit(directory: Path, name: str, room: int) -> str:
    """``name`` cut (on a character boundary) so that ``room`` more bytes still fit in the filesystem's name limit."""
    limit = _name_max(directory) - room
    while len(os.fsencode(name)) > limit:
        name = name[:-1]
    return name


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write the JSON report atomically: a reader sees the old file or the whole new one."""
    tmp = _temporary(path, ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A name that is not UTF-8 is written as JSON \udcXX escapes, which read back as the same name.
        with open(tmp, "w", encoding="utf-8", errors="backslashreplace") as out:
            json.dump(report, out, indent=2, ensure_ascii=False, sort_keys=True)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        _discard(tmp)
        raise FilingError(f"cannot write {path}: {exc.strerror or exc}") from exc


class TargetExists(FilingError):
    """Something is already at the destination: it is never replaced."""


class SourceReplaced(FilingError):
    """The file at the source path is no longer the one expected (a newer file was moved over it): not moved."""


FileKey = tuple[int, int, int]  # size, mtime_ns (clamped to 64 bits), inode


def file_key(st: os.stat_result) -> FileKey:
    return st.st_size, min(st.st_mtime_ns, 2**63 - 1), st.st_ino


def move(source: Path, target: Path, *, expect: FileKey | None = None) -> None:
    """Move ``source`` to ``target`` without ever losing it, and without ever replacing a file at ``target``.

    With ``expect``, only the file with that identity is moved: a newer file moved over ``source`` in the
    meantime is left (or put back) where it was, and SourceReplaced raised.
    """
    if not source.exists() and not source.is_symlink():
        if target.exists():
            return  # moved before a crash; nothing left to do
        raise FilingError(f"{source} is gone and {target} does not exist")
    if _taken(target) and _already_there(source, target):
        # A crash came between the copy (or link) and removing the source: finish that move.
        source.unlink()
        _fsync_dir(source.parent)
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            rename_noreplace(source, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            _copy_then_unlink(source, target, expect)
        else:
            if expect is not None and file_key(os.stat(target, follow_symlinks=False)) != expect:
                # Replaced between the caller's check and the rename: give the newer file its place back.
                rename_noreplace(target, source)
                raise SourceReplaced(f"{source} was replaced by a newer file while it was being filed; left in place")
        _fsync_dir(target.parent)
        _fsync_dir(source.parent)
    except FilingError:
        raise
    except FileExistsError:
        raise TargetExists(f"cannot move {source}: {target} already exists and is never replaced") from None
    except OSError as exc:
        raise FilingError(f"cannot move {source} to {target.parent}: {exc.strerror or exc}") from exc


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


def rename_noreplace(source: Path, target: Path) -> None:
    """rename(2) that fails with FileExistsError instead of replacing ``target``.

    renameat2(RENAME_NOREPLACE) makes the check and the rename one step; where the
    filesystem does not offer it, a hard link (which never replaces) and an unlink do,
    and where neither works, a check just before the rename is the best there is.
    """
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(source), None, str(target))
    try:
        os.link(source, target, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            raise
        if _taken(target):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target)) from None
        os.rename(source, target)
        return
    os.unlink(source)


def _already_there(source: Path, target: Path) -> bool:
    """Whether ``target`` is ``source`` itself (a hard link) or a whole copy of it."""
    try:
        if os.path.samefile(source, target):
            return True
        if os.path.getsize(source) != os.path.getsize(target):
            return False
        with open(source, "rb") as a, open(target, "rb") as b:
            while True:
                chunk = a.read(1024 * 1024)
                if chunk != b.read(1024 * 1024):
                    return False
                if not chunk:
                    return True
    except OSError:
        return False


def _copy_then_unlink(source: Path, target: Path, expect: FileKey | None) -> None:
    partial = _temporary(target, ".ingestd-partial")
    try:
        with open(source, "rb") as src, open(partial, "wb") as dst:
            copied = file_key(os.fstat(src.fileno()))
            if expect is not None and copied != expect:
                raise SourceReplaced(f"{source} was replaced by a newer file while it was being filed; left in place")
            shutil.copyfileobj(src, dst, 1024 * 1024)
            dst.flush()
            os.fsync(dst.fileno())
        if partial.stat().st_size != source.stat().st_size:
            raise FilingError(f"copy of {source} to {target.parent} came out short")
        shutil.copystat(source, partial)
        rename_noreplace(partial, target)
    except BaseException:
        _discard(partial)
        raise
    _fsync_dir(target.parent)
    if file_key(os.stat(source, follow_symlinks=False)) == copied:
        source.unlink()
    # else: a newer file took the source's name meanwhile; the copy is of the file that was there before it


def _discard(path: Path) -> None:
    """Remove a half-written file if there is one; failing to is never worth hiding the error that led here."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (SMB, FUSE) refuse fsync on directories; the data itself was synced
    finally:
        os.close(fd)


def file_away(*, source: Path, sidecar: Path | None, target: Path, report: dict[str, Any], failed: bool,
              expect: FileKey | None = None) -> Path:
    """Write the report, then move the audio (only the file ``expect`` names, if given) and its sidecar beside it.
    Returns the report's path."""
    report_file = report_path(target, failed=failed)
    write_report(report_file, report)
    try:
        move(source, target, expect=expect)
    except SourceReplaced:
        _discard(report_file)  # a report beside nothing would mislead
        raise
    if sidecar is not None and (sidecar.exists() or sidecar.is_symlink()):
        move(sidecar, target.with_name(target.stem + sidecar.suffix))
    return report_file
