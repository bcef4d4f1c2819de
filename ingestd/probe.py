"""What a file is: format, duration and tags (read with mutagen), and whether it is all there.

``is_complete`` answers the watcher's question "has the writer finished?" for formats
that state their own length (WAV, AIFF, FLAC, MP4). It reads headers and, for FLAC,
the last frame only, so it stays cheap on multi-gigabyte files.
"""

from __future__ import annotations

import os
import struct
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mutagen
from mutagen.aiff import AIFF
from mutagen.flac import FLAC
from mutagen.id3 import ID3
from mutagen.mp4 import MP4, MP4Tags
from mutagen.wave import WAVE
from mutagen._vorbis import VCommentDict

from .errors import IngestdError

# mutagen class name → the format name ingestd reports
_FORMATS = {
    "MP3": "mp3", "EasyMP3": "mp3", "MP4": "mp4", "EasyMP4": "mp4", "FLAC": "flac", "WAVE": "wave",
    "AIFF": "aiff", "OggVorbis": "ogg", "OggFLAC": "ogg", "OggSpeex": "ogg", "OggTheora": "ogg",
    "OggOpus": "opus", "AAC": "aac", "AC3": "ac3", "ASF": "asf", "MonkeysAudio": "ape",
    "WavPack": "wavpack", "Musepack": "musepack", "TrueAudio": "tta", "OptimFROG": "ofr", "DSF": "dsf",
}

_ID3_FRAMES = {"title": "TIT2", "artist": "TPE1", "album": "TALB", "track": "TRCK", "date": "TDRC",
               "genre": "TCON", "albumartist": "TPE2", "composer": "TCOM"}
_MP4_ATOMS = {"title": "©nam", "artist": "©ART", "album": "©alb", "track": "trkn", "date": "©day",
              "genre": "©gen", "comment": "©cmt", "albumartist": "aART", "composer": "©wrt"}
_VORBIS_FIELDS = {"title": ("title",), "artist": ("artist",), "album": ("album",), "track": ("tracknumber",),
                  "date": ("date", "year"), "genre": ("genre",), "comment": ("comment", "description"),
                  "albumartist": ("albumartist", "album artist"), "composer": ("composer",)}


@dataclass(frozen=True)
class AudioInfo:
    format: str
    duration: float | None  # seconds
    sample_rate: int | None
    channels: int | None
    # Normalised keys: title, artist, album, track, date, genre, comment, albumartist, composer.
    tags: dict[str, str] = field(default_factory=dict)


class ProbeError(IngestdError):
    """The file is not audio ingestd can read: empty, another kind of file, or cut short."""


def probe(path: Path) -> AudioInfo:
    """Read a file's format, stream properties and tags.

    Raises ``ProbeError`` when the file is not usable audio, and ``OSError`` when it cannot be read at all.
    """
    if path.stat().st_size == 0:
        raise ProbeError(f"empty file: {path.name} has no bytes")
    with path.open("rb") as fh:
        head = fh.read(64)
    try:
        # A format its first bytes name alone is read by that one class: asked about every format, mutagen
        # imports each format's module first, a tenth of a second on every start of ``ingestd upload``.
        kind = _kind_named_by(head)
        audio = mutagen.File(path, options=[kind]) if kind else None
        if audio is None:  # (not "or": a file without tags is falsy)
            audio = mutagen.File(path)
    except (OSError, MemoryError):
        raise  # the machine, not the file: the job is retried
    except Exception as exc:  # MutagenError, and on damaged files IndexError and the like from its parsers
        if head[:4] == b"RF64":
            raise ProbeError(f"unsupported audio: {path.name} is an RF64 (64-bit) WAV, which ingestd cannot read; "
                             "convert it to FLAC or a standard WAV") from None
        if _looks_like_audio(head):
            # A parser's own IndexError says nothing a person can act on; mutagen's messages do.
            detail = exc if isinstance(exc, mutagen.MutagenError) else "its headers do not hold together"
            raise ProbeError(f"corrupt or truncated audio: {path.name}: {detail}") from None
        raise ProbeError(f"not audio: {path.name} does not start like any audio format ingestd reads") from None
    if audio is None:
        raise ProbeError(f"not audio: {path.name} is not in a format ingestd reads")
    if is_complete(path) is False:
        raise ProbeError(f"corrupt or truncated audio: {path.name} is shorter than its header says, "
                         "or its writer never finished it")

    info = audio.info
    duration = getattr(info, "length", None)
    return AudioInfo(
        format=_FORMATS.get(type(audio).__name__, type(audio).__name__.lower()),
        duration=float(duration) if duration else None,
        sample_rate=getattr(info, "sample_rate", None) or None,
        channels=getattr(info, "channels", None) or None,
        tags=_read_tags(audio.tags),
    )


def _kind_named_by(head: bytes) -> type[mutagen.FileType] | None:
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return WAVE
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return AIFF
    if head[:4] == b"fLaC":
        return FLAC
    if head[4:8] == b"ftyp":
        return MP4
    return None


def _looks_like_audio(head: bytes) -> bool:
    return (
        head[:3] == b"ID3"
        or head[:4] in (b"RIFF", b"RF64", b"FORM", b"fLaC", b"OggS", b"ADIF", b"MAC ", b"wvpk", b"TTA1", b"MPCK")
        or head[4:8] == b"ftyp"
        or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)  # MPEG / ADTS frame sync
    )


# ---- tags -------------------------------------------------------------------------------------


def _read_tags(tags: Any) -> dict[str, str]:
    if isinstance(tags, ID3):
        raw = {key: _id3_values(tags, frame) for key, frame in _ID3_FRAMES.items()}
        raw["comment"] = _id3_comment(tags)
    elif isinstance(tags, MP4Tags):
        raw = {key: _mp4_values(tags.get(atom, [])) for key, atom in _MP4_ATOMS.items()}
    elif isinstance(tags, VCommentDict):
        raw = {key: next((tags[name] for name in names if name in tags), []) for key, names in _VORBIS_FIELDS.items()}
    else:
        return {}
    out = {}
    for key, values in raw.items():
        if key == "track":
            values = [_track_number(v) for v in values]
        text = ", ".join(v for v in (unicodedata.normalize("NFC", str(v)).strip() for v in values) if v)
        if text:
            out[key] = text
    return out


def _id3_values(tags: ID3, frame_id: str) -> list[Any]:
    frame = tags.get(frame_id)
    if frame is None:
        return []
    # TCON may hold ID3v1 genre numbers such as "(12)"; .genres resolves them to names.
    return list(frame.genres) if frame_id == "TCON" else list(frame.text)


def _id3_comment(tags: ID3) -> list[Any]:
    # Players store machine data in described comments (iTunNORM, iTunSMPB); the plain comment has no description.
    comments = tags.getall("COMM")
    plain = [c for c in comments if not c.desc] or [c for c in comments if not c.desc.startswith("iTun")]
    return list(plain[0].text) if plain else []


def _mp4_values(values: list[Any]) -> list[Any]:
    # trkn and disk hold (number, total) pairs.
    return [v[0] if isinstance(v, tuple) else v for v in values]


def _track_number(value: Any) -> str:
    """``"3/10"`` → ``"3"``, ``"03"`` → ``"3"``, ``0`` → ``""`` (no track)."""
    text = str(value).split("/")[0].strip()
    if text.isdigit():
        return str(int(text)) if int(text) else ""
    return text


# ---- completeness ------------------------------------------------------------------------------

_PLACEHOLDER_SIZES = (0, 0xFFFFFFFF)  # what streaming writers put in a length field they cannot seek back to
_MAX_CHUNKS = 4096


def is_complete(path: str | os.PathLike[str]) -> bool | None:
    """Whether the whole file is present, for formats that state their own length.

    ``True``: every byte the headers announce is there. ``False``: the file is shorter than
    it says, or its headers are not finished yet. ``None``: the format does not say (MP3,
    Ogg, unknown files, or a writer that left placeholder sizes), so only time can tell.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        fh = _Reader(fd)
        head = fh.read(12)
        if len(head) < 12:
            return None
        if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
            return _riff_complete(fh, head, size)
        if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
            return _iff_size_complete(struct.unpack(">I", head[4:8])[0], size)
        if head[4:8] == b"ftyp":
            return _mp4_complete(fh, size)
        flac_start = _skip_id3v2(head, fh)
        fh.seek(flac_start)
        if fh.read(4) == b"fLaC":
            return _flac_complete(fh, flac_start + 4, size)
    finally:
        os.close(fd)
    return None


class _Reader:
    """``seek`` and ``read`` on a file descriptor, the first few KiB from a single read: the watcher asks this of
    every file of a backlog, and the headers it looks at sit there."""

    HEAD = 4096

    def __init__(self, fd: int):
        self._fd = fd
        self._pos = 0
        self._head = self._pread(self.HEAD, 0)

    def seek(self, pos: int) -> None:
        self._pos = pos

    def read(self, n: int) -> bytes:
        end = self._pos + n
        if end <= len(self._head) or len(self._head) < self.HEAD:  # a file shorter than HEAD is all in it
            data = self._head[self._pos:end]
        else:
            data = self._pread(n, self._pos)
        self._pos += len(data)
        return data

    def _pread(self, n: int, pos: int) -> bytes:
        chunks = []
        while n > 0:
            chunk = os.pread(self._fd, n, pos)
            if not chunk:
                break
            chunks.append(chunk)
            n, pos = n - len(chunk), pos + len(chunk)
        return b"".join(chunks)


def _iff_size_complete(declared: int, size: int) -> bool | None:
    if declared in _PLACEHOLDER_SIZES:
        return None
    return size >= 8 + declared


def _riff_complete(fh: _Reader, head: bytes, size: int) -> bool | None:
    riff_size = struct.unpack("<I", head[4:8])[0]
    pos = 12
    data_size: int | None = None
    if head[:4] == b"RF64":
        # RF64 keeps the real 64-bit sizes in a ds64 chunk right after the header.
        fh.seek(pos)
        ds64 = fh.read(28)
        if len(ds64) < 28 or ds64[:4] != b"ds64":
            return False
        riff_size, data_size = struct.unpack("<QQ", ds64[8:24])
    complete = _iff_size_complete(riff_size, size)
    if complete is not True:
        return complete
    for _ in range(_MAX_CHUNKS):
        fh.seek(pos)
        header = fh.read(8)
        if len(header) < 8:
            return False  # the data chunk has not been reached yet
        chunk_id, chunk_size = header[:4], struct.unpack("<I", header[4:])[0]
        if chunk_id == b"data":
            if data_size is not None and chunk_size == 0xFFFFFFFF:
                chunk_size = data_size
            if chunk_size == 0xFFFFFFFF:
                return None
            if chunk_size == 0 and size > pos + 8:
                return False  # samples follow a data chunk whose size is not written yet
            return pos + 8 + chunk_size <= size
        pos += 8 + chunk_size + (chunk_size & 1)
    return None


def _mp4_complete(fh: _Reader, size: int) -> bool:
    """Top-level boxes must tile the file exactly, and the ``moov`` index must be among them."""
    pos, seen_moov = 0, False
    for _ in range(_MAX_CHUNKS):
        if pos == size:
            return seen_moov
        fh.seek(pos)
        header = fh.read(16)
        if len(header) < 8:
            return False
        box_size, box_type = struct.unpack(">I", header[:4])[0], header[4:8]
        seen_moov = seen_moov or box_type == b"moov"
        if box_size == 1:
            if len(header) < 16:
                return False
            box_size = struct.unpack(">Q", header[8:16])[0]
        elif box_size == 0:  # "extends to the end of the file"
            return seen_moov
        if box_size < 8 or pos + box_size > size:
            return False
        pos += box_size
    return False


def _skip_id3v2(head: bytes, fh: _Reader) -> int:
    """Offset after a leading ID3v2 tag (some taggers put one before FLAC's magic)."""
    if head[:3] != b"ID3":
        return 0
    fh.seek(0)
    header = fh.read(10)
    if len(header) < 10:
        return 0
    length = (header[6] << 21) | (header[7] << 14) | (header[8] << 7) | header[9]
    footer = 10 if header[5] & 0x10 else 0
    return 10 + length + footer


# FLAC: metadata blocks first, then frames. STREAMINFO states the total number of samples;
# the last frame's header says which sample it starts at and how many it holds, and its
# CRC-16 proves it is whole. That needs the tail of the file only.

_FLAC_TAIL = 1 << 20  # bytes searched backwards for the last frame when STREAMINFO gives no max frame size
_ID3V1_SIZE = 128


def _flac_complete(fh: _Reader, pos: int, size: int) -> bool | None:
    streaminfo = None
    while True:
        fh.seek(pos)
        header = fh.read(4)
        if len(header) < 4:
            return False
        last, block_type = header[0] & 0x80, header[0] & 0x7F
        length = int.from_bytes(header[1:4], "big")
        if pos + 4 + length > size:
            return False
        if block_type == 0:
            streaminfo = fh.read(length)
        pos += 4 + length
        if last:
            break
    if streaminfo is None or len(streaminfo) < 18:
        return None
    if size <= pos:
        return False  # no audio frames yet

    min_block, max_block = struct.unpack(">HH", streaminfo[:4])
    max_frame = int.from_bytes(streaminfo[7:10], "big")
    packed = int.from_bytes(streaminfo[10:18], "big")  # rate:20 channels-1:3 bits-1:5 samples:36
    channels, bits = ((packed >> 41) & 7) + 1, ((packed >> 36) & 31) + 1
    total_samples = packed & (1 << 36) - 1
    if total_samples == 0:
        return None

    end = size
    fh.seek(size - _ID3V1_SIZE)
    if size - _ID3V1_SIZE > pos and fh.read(3) == b"TAG":
        end -= _ID3V1_SIZE
    window = min(end - pos, max_frame + 64 if max_frame else _FLAC_TAIL)
    fh.seek(end - window)
    tail = fh.read(window)

    fixed_block = min_block == max_block
    i = len(tail) - 2
    while i >= 0:
        i = max(tail.rfind(b"\xff\xf8", 0, i + 2), tail.rfind(b"\xff\xf9", 0, i + 2))
        if i < 0:
            break
        frame = _flac_frame_header(tail, i, channels, bits)
        if frame is not None:
            number, block_size, variable = frame
            first_sample = number if variable else number * (max_block if fixed_block else block_size)
            if first_sample + block_size < total_samples:
                return False  # later frames are missing
            if first_sample + block_size == total_samples:
                body = tail[i:]
                return len(body) > 2 and _crc16(body[:-2]) == int.from_bytes(body[-2:], "big")
        i -= 1
    return None


_FLAC_SAMPLE_SIZES = {1: 8, 2: 12, 4: 16, 5: 20, 6: 24, 7: 32}


def _flac_frame_header(data: bytes, i: int, channels: int, bits: int) -> tuple[int, int, bool] | None:
    """(frame or sample number, block size, variable block size?) when a frame header of this stream starts at ``i``.

    Sync codes also occur inside audio data; besides the header CRC-8, the channel layout
    and sample size must agree with STREAMINFO before a match is believed.
    """
    if i + 5 > len(data):
        return None
    variable = bool(data[i + 1] & 1)
    block_code, rate_code = data[i + 2] >> 4, data[i + 2] & 0x0F
    layout, size_code = data[i + 3] >> 4, (data[i + 3] >> 1) & 7
    if block_code == 0 or rate_code == 0x0F or data[i + 3] & 1:
        return None
    if (layout + 1 if layout < 8 else 2 if layout <= 10 else 0) != channels:
        return None
    if size_code and _FLAC_SAMPLE_SIZES.get(size_code) != bits:
        return None
    # UTF-8-style coded number
    j = i + 4
    first = data[j]
    if first < 0x80:
        extra, number = 0, first
    elif first >= 0xC0 and first != 0xFF:
        extra = next(n for n in range(1, 7) if not first & (0x80 >> (n + 1)))
        number = first & (0x3F >> extra)
    else:
        return None
    j += 1
    if j + extra > len(data):
        return None
    for byte in data[j:j + extra]:
        if byte & 0xC0 != 0x80:
            return None
        number = (number << 6) | (byte & 0x3F)
    j += extra
    if block_code == 1:
        block_size = 192
    elif 2 <= block_code <= 5:
        block_size = 576 << (block_code - 2)
    elif block_code == 6:
        block_size, j = _read_uint(data, j, 1) + 1, j + 1
    elif block_code == 7:
        block_size, j = _read_uint(data, j, 2) + 1, j + 2
    else:
        block_size = 256 << (block_code - 8)
    j += {12: 1, 13: 2, 14: 2}.get(rate_code, 0)
    if j >= len(data) or _crc8(data[i:j]) != data[j]:
        return None
    return number, block_size, variable


def _read_uint(data: bytes, at: int, width: int) -> int:
    return int.from_bytes(data[at:at + width], "big")


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = _CRC8_TABLE[crc ^ byte]
    return crc


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16_TABLE[(crc >> 8) ^ byte]
    return crc


def _crc_table(poly: int, bits: int) -> list[int]:
    top, mask = 1 << (bits - 1), (1 << bits) - 1
    table = []
    for n in range(256):
        crc = n << (bits - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & mask if crc & top else (crc << 1) & mask
        table.append(crc)
    return table


_CRC8_TABLE = _crc_table(0x07, 8)
_CRC16_TABLE = _crc_table(0x8005, 16)
