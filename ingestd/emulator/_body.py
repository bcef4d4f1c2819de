"""Reading request bodies off the socket in bounded chunks, and streaming multipart forms to disk."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

CHUNK = 1024 * 1024
MAX_FIELD = 4096


class BodyError(Exception):
    """The request body is unusable; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


class Body:
    """A request body, read once: either ``Content-Length`` bytes or a chunked stream."""

    def __init__(self, rfile: BinaryIO, headers: Message, limit: int):
        self._rfile = rfile
        self.consumed = False
        self.finished = False  # every byte of the body has been read off the socket
        encoding = (headers.get("Transfer-Encoding") or "").strip().lower()
        self.chunked = encoding == "chunked"
        self.length: int | None = None
        self.framing_error: str | None = None
        if encoding and not self.chunked:
            self.framing_error = f"unsupported Transfer-Encoding {encoding!r}"
        elif not self.chunked:
            raw = (headers.get("Content-Length") or "0").strip()
            if not raw.isdigit():
                self.framing_error = f"invalid Content-Length {raw!r}"
            else:
                self.length = int(raw)
        self.limit = limit

    @property
    def readable(self) -> bool:
        """Whether the body's end can be found, so the connection can be kept."""
        return self.framing_error is None

    def chunks(self) -> Iterator[bytes]:
        if self.framing_error:
            raise BodyError(self.framing_error)
        if self.consumed:
            return
        if self.length is not None and self.length > self.limit:
            raise BodyError(f"request body of {self.length} bytes is larger than {self.limit}", 413)
        self.consumed = True
        if self.chunked:
            yield from self._chunked()
            self.finished = True
            return
        assert self.length is not None
        remaining = self.length
        self.finished = not remaining
        while remaining:
            data = self._rfile.read(min(remaining, CHUNK))
            if not data:
                raise ConnectionError("client closed the connection mid-body")
            remaining -= len(data)
            self.finished = not remaining  # before the yield: a reader may stop at the last chunk
            yield data

    def _chunked(self) -> Iterator[bytes]:
        total = 0
        while True:
            line = self._rfile.readline(1026)
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ConnectionError("malformed chunk size") from None
            if size == 0:
                while self._rfile.readline(1026).strip():
                    pass  # trailers carry nothing the API uses
                return
            total += size
            if total > self.limit:
                raise ConnectionError("chunked body over the size limit")
            while size:
                data = self._rfile.read(min(size, CHUNK))
                if not data:
                    raise ConnectionError("client closed the connection mid-body")
                size -= len(data)
                yield data
            self._rfile.readline(3)

    def read(self) -> bytes:
        return b"".join(self.chunks())

    def drain(self) -> bool:
        """Read and discard an unread body; False when the connection must be closed instead.

        A body abandoned part-way is not read on: its rest would otherwise be parsed as the next request.
        """
        if not self.readable:
            return False
        if self.consumed:
            return self.finished
        if self.length is not None and self.length > self.limit:
            return False
        try:
            for _ in self.chunks():
                pass
        except (ConnectionError, OSError):
            return False
        return True


@dataclass
class UploadedForm:
    """A multipart form whose ``file`` field went to ``file_path`` (hashed on the way)."""

    fields: dict[str, str] = field(default_factory=dict)
    file_path: Path | None = None
    file_size: int = 0
    file_md5: str = ""

    def discard(self) -> None:
        if self.file_path is not None:
            self.file_path.unlink(missing_ok=True)
            self.file_path = None


def read_multipart(body: Body, content_type: str, spool_dir: Path, file_field: str = "file") -> UploadedForm:
    """Parse a multipart/form-data body, writing the file to a temporary file in ``spool_dir``.

    The file is the field named ``file_field``, or a field that carries a ``filename`` (AIOZ's Node client
    names a progressive upload's file field after the file). Small fields are kept in memory (up to
    ``MAX_FIELD`` bytes each); fields may arrive in any order.
    """
    ctype, options = parse_options_header(content_type)
    if ctype != b"multipart/form-data" or not options.get(b"boundary"):
        raise BodyError("Content-Type must be multipart/form-data with a boundary")
    form = UploadedForm()
    state: dict = {"name": None, "headers": {}, "header": b"", "value": b"", "buffer": None, "out": None, "md5": None}

    def on_part_begin() -> None:
        state["headers"] = {}
        state["name"] = None

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["header"].decode("latin-1").lower()] = state["value"]
        state["header"] = state["value"] = b""

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(state["headers"].get("content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        state["name"] = name
        if name == file_field or b"filename" in disposition:
            if form.file_path is not None:
                raise BodyError("the form carries more than one file")
            fd, path = tempfile.mkstemp(dir=spool_dir, suffix=".upload")
            form.file_path = Path(path)
            state["out"] = os.fdopen(fd, "wb", buffering=0)
            state["md5"] = hashlib.md5()
        else:
            state["buffer"] = bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        out = state["out"]
        if out is not None:
            view = memoryview(data)[start:end]
            out.write(view)
            state["md5"].update(view)
            form.file_size += end - start
        else:
            buffer = state["buffer"]
            buffer += data[start:end]
            if len(buffer) > MAX_FIELD:
                raise BodyError(f"field {state['name']!r} is longer than {MAX_FIELD} bytes")

    def on_part_end() -> None:
        if state["out"] is not None:
            state["out"].close()
            state["out"] = None
            form.file_md5 = state["md5"].hexdigest()
        elif state["buffer"] is not None:
            form.fields[state["name"]] = state["buffer"].decode("utf-8", "replace")
            state["buffer"] = None

    parser = MultipartParser(
        options[b"boundary"],
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        for chunk in body.chunks():
            parser.write(chunk)
        parser.finalize()
        if parser.state != MultipartState.END:
            raise BodyError("multipart body ends before its closing boundary")
    except MultipartParseError as exc:
        form.discard()
        raise BodyError(f"malformed multipart body: {exc}") from None
    except BaseException:
        form.discard()
        raise
    finally:
        if state["out"] is not None:
            state["out"].close()
    return form
