"""Moving a finished file, and its sidecar, to the done or failed folder.

The source is never removed before its copy is safe: a same-filesystem move is a
rename; across filesystems the file is copied, fsynced, checked and only then
unlinked. Each step can be repeated after a crash: a move whose source is gone
and whose destination is complete counts as done.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from .errors import IngestdError

DONE_SUFFIX = ".ingestd.json"
ERROR_SUFFIX = ".error.json"


class FilingError(IngestdError):
    """The file could not be moved or its report written; the source is still where it was."""


def destination(dest_dir: Path, relpath: str, job_id: str) -> Path:
    """Where a file goes: the same relative path, or a name tagged with the job id if that is taken."""
    target = Path(dest_dir) / relpath
    if not target.exists() and not target.is_symlink():
        return target
    return target.with_name(f"{target.stem}.{job_id[:8]}{target.suffix}")


def report_path(target: Path, *, failed: bool) -> Path:
    return target.with_name(target.name + (ERROR_SUFFIX if failed else DONE_SUFFIX))


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write the JSON report atomically: a reader sees the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as out:
            json.dump(report, out, indent=2, ensure_ascii=False, sort_keys=True)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        _discard(tmp)
        raise FilingError(f"cannot write {path}: {exc.strerror or exc}") from exc


def move(source: Path, target: Path) -> None:
    """Move ``source`` to ``target`` without ever losing it."""
    if not source.exists() and not source.is_symlink():
        if target.exists():
            return  # moved before a crash; nothing left to do
        raise FilingError(f"{source} is gone and {target} does not exist")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(source, target)
        except OSError as exc:
            if exc.errno != 18:  # EXDEV: another filesystem
                raise
            _copy_then_unlink(source, target)
        _fsync_dir(target.parent)
        _fsync_dir(source.parent)
    except FilingError:
        raise
    except OSError as exc:
        raise FilingError(f"cannot move {source} to {target.parent}: {exc.strerror or exc}") from exc


def _copy_then_unlink(source: Path, target: Path) -> None:
    partial = target.with_name(f".{target.name}.ingestd-partial")
    try:
        with open(source, "rb") as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
            dst.flush()
            os.fsync(dst.fileno())
        if partial.stat().st_size != source.stat().st_size:
            raise FilingError(f"copy of {source} to {target.parent} came out short")
        shutil.copystat(source, partial)
        os.replace(partial, target)
    except BaseException:
        _discard(partial)
        raise
    _fsync_dir(target.parent)
    source.unlink()


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


def file_away(*, source: Path, sidecar: Path | None, target: Path, report: dict[str, Any], failed: bool) -> Path:
    """Write the report, then move the audio and its sidecar beside it. Returns the report's path."""
    report_file = report_path(target, failed=failed)
    write_report(report_file, report)
    move(source, target)
    if sidecar is not None and (sidecar.exists() or sidecar.is_symlink()):
        move(sidecar, target.with_name(target.stem + sidecar.suffix))
    return report_file
