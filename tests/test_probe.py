import random
import shutil
import struct
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from ingestd.probe import AudioInfo, ProbeError, is_complete, probe
from tests.audio import write_wav

FIXTURES = Path(__file__).parent / "fixtures"


def truncated_copy(source: Path, target: Path, keep: float) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    return target


# ---- tags and stream properties -----------------------------------------------------------------


def test_id3_tags_from_mp3():
    info = probe(FIXTURES / "tagged.mp3")
    assert info.format == "mp3"
    assert info.tags == {
        "title": "Pilot Episode",
        "artist": "The Studio",
        "album": "Season One",
        "track": "3",  # stored as "3/10"
        "date": "2026",
        "genre": "Podcast",
        "comment": "The first episode.",  # the iTunNORM comment is skipped
        "albumartist": "The Studio Network",
        "composer": "Jo Writer",
    }
    assert info.sample_rate == 8000
    assert info.channels == 1
    assert 1.4 < info.duration < 1.8


def test_mp4_atoms_from_m4a():
    info = probe(FIXTURES / "tagged.m4a")
    assert info.format == "mp4"
    assert info.tags == {
        "title": "Pilot Episode",
        "artist": "The Studio",
        "album": "Season One",
        "track": "3",  # trkn (3, 10)
        "date": "2026",
        "genre": "Podcast",
        "comment": "The first episode.",
        "albumartist": "The Studio Network",
        "composer": "Jo Writer",
    }
    assert info.sample_rate == 22050
    assert 1.4 < info.duration < 1.7


def test_vorbis_comments_from_flac_joined_and_stripped():
    info = probe(FIXTURES / "tagged.flac")
    assert info == AudioInfo(
        format="flac",
        duration=1.5,
        sample_rate=8000,
        channels=1,
        tags={
            "title": "Café Stories",
            "artist": "Ana Lima, Bruno Reis",
            "album": "Season One",
            "track": "3",
            "date": "2026",
            "genre": "Podcast",
            "comment": "Recorded in Lisbon.",
        },
    )


def test_ogg_title_is_nfc_normalised():
    info = probe(FIXTURES / "tagged.ogg")
    assert info.format == "ogg"
    assert info.tags["title"] == "Caf\u00e9 Stories"  # stored as "Cafe\u0301 Stories"
    assert info.tags["comment"] == "Recorded in Lisbon."  # from DESCRIPTION
    assert info.duration == 1.5


def test_wav_without_tags(tmp_path):
    info = probe(write_wav(tmp_path / "tone.wav", 0.5, rate=22050, channels=2))
    assert info.format == "wave"
    assert info.duration == pytest.approx(0.5, abs=0.01)
    assert (info.sample_rate, info.channels) == (22050, 2)
    assert info.tags == {}


# ---- probe errors ---------------------------------------------------------------------------------


def test_zero_byte_file(tmp_path):
    empty = tmp_path / "empty.mp3"
    empty.touch()
    with pytest.raises(ProbeError, match="empty file: empty.mp3"):
        probe(empty)


def test_random_bytes_named_mp3_are_not_audio(tmp_path):
    fake = tmp_path / "episode.mp3"
    fake.write_bytes(random.Random(7).randbytes(8192))
    with pytest.raises(ProbeError, match="^not audio: episode.mp3"):
        probe(fake)


def test_a_document_with_an_audio_name_is_not_audio(tmp_path):
    fake = tmp_path / "notes.m4a"
    fake.write_text("<html><body>download failed</body></html>\n" * 50)
    with pytest.raises(ProbeError, match="^not audio"):
        probe(fake)


def test_truncated_wav(tmp_path):
    whole = write_wav(tmp_path / "whole.wav", 1.0)
    cut = truncated_copy(whole, tmp_path / "cut.wav", 0.5)
    with pytest.raises(ProbeError, match="^corrupt or truncated audio: cut.wav"):
        probe(cut)


def test_mp3_cut_inside_its_header(tmp_path):
    cut = truncated_copy(FIXTURES / "tagged.mp3", tmp_path / "cut.mp3", 0.05)
    with pytest.raises(ProbeError, match="^corrupt or truncated audio: cut.mp3"):
        probe(cut)


def test_unreadable_file_is_an_os_error_not_a_verdict_on_its_content(tmp_path):
    with pytest.raises(FileNotFoundError):
        probe(tmp_path / "gone.mp3")


# ---- is_complete ------------------------------------------------------------------------------------


def test_wav_complete_and_truncated(tmp_path):
    whole = write_wav(tmp_path / "whole.wav", 1.0)
    assert is_complete(whole) is True
    for keep in (0.01, 0.5, 0.999):
        assert is_complete(truncated_copy(whole, tmp_path / f"cut-{keep}.wav", keep)) is False


def test_wav_while_its_writer_is_still_writing(tmp_path):
    path = tmp_path / "recording.wav"
    second = b"\x00\x10\x00\x10" * 8000
    with path.open("wb") as fh, wave.open(fh, "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.setnframes(16000)  # the header announces two seconds up front
        out.writeframesraw(second)
        fh.flush()
        assert is_complete(path) is False
        out.writeframesraw(second)
    assert is_complete(path) is True


def test_wav_copied_in_pieces(tmp_path):
    source = write_wav(tmp_path / "source.wav", 0.5).read_bytes()
    target = tmp_path / "target.wav"
    with target.open("wb") as out:
        for start in range(0, len(source), 8192):
            out.write(source[start:start + 8192])
            out.flush()
            assert is_complete(target) is (start + 8192 >= len(source))


def test_wav_whose_data_size_is_not_written_yet(tmp_path):
    path = write_wav(tmp_path / "recording.wav", 0.2)
    data = bytearray(path.read_bytes())
    data[4:8] = (36).to_bytes(4, "little")  # as if no samples had been written
    data[40:44] = bytes(4)
    path.write_bytes(bytes(data))
    assert is_complete(path) is False


def test_wav_with_streaming_placeholder_sizes_is_unknown(tmp_path):
    path = write_wav(tmp_path / "stream.wav", 0.2)
    data = bytearray(path.read_bytes())
    data[4:8] = b"\xff\xff\xff\xff"  # RIFF size not known while streaming
    path.write_bytes(bytes(data))
    assert is_complete(path) is None


@pytest.mark.parametrize("name", ["tagged.m4a", "tagged.flac"])
def test_self_describing_fixtures_complete_and_truncated(tmp_path, name):
    whole = shutil.copy(FIXTURES / name, tmp_path / name)
    assert is_complete(Path(whole)) is True
    for keep in (0.02, 0.3, 0.7, 0.99):
        cut = truncated_copy(FIXTURES / name, tmp_path / f"{keep}-{name}", keep)
        assert is_complete(cut) is False, f"{name} cut to {keep:.0%}"


def test_flac_with_trailing_id3v1_tag_is_complete(tmp_path):
    path = tmp_path / "tagged.flac"
    path.write_bytes((FIXTURES / "tagged.flac").read_bytes() + b"TAG" + b"\0" * 125)
    assert is_complete(path) is True


def test_m4a_with_its_index_still_missing(tmp_path):
    # Writers put `moov` after the audio: until it lands the boxes tile the file but no index exists.
    data = (FIXTURES / "tagged.m4a").read_bytes()
    moov_at = data.index(b"moov") - 4
    assert moov_at > data.index(b"mdat")
    path = tmp_path / "partial.m4a"
    path.write_bytes(data[:moov_at])
    assert is_complete(path) is False


@pytest.mark.parametrize("name", ["tagged.mp3", "tagged.ogg"])
def test_formats_without_a_stated_length_are_unknown(tmp_path, name):
    assert is_complete(FIXTURES / name) is None
    assert is_complete(truncated_copy(FIXTURES / name, tmp_path / name, 0.5)) is None


def aiff_bytes(frames: int, rate_extended: bytes = bytes.fromhex("400bfa00000000000000")) -> bytes:
    """A mono 16-bit AIFF at 8000 Hz (the rate as an 80-bit extended float)."""
    comm = b"COMM" + struct.pack(">IhIh", 18, 1, frames, 16) + rate_extended
    samples = b"\x00\x10" * frames
    ssnd = b"SSND" + struct.pack(">III", 8 + len(samples), 0, 0) + samples
    return b"FORM" + struct.pack(">I", 4 + len(comm) + len(ssnd)) + b"AIFF" + comm + ssnd


def test_aiff_complete_and_truncated(tmp_path):
    path = tmp_path / "tone.aiff"
    path.write_bytes(aiff_bytes(4000))
    assert is_complete(path) is True
    info = probe(path)
    assert (info.format, info.sample_rate, info.duration) == ("aiff", 8000, 0.5)
    path.write_bytes(aiff_bytes(4000)[:5000])
    assert is_complete(path) is False


def rf64_bytes(wav: bytes) -> bytes:
    """The same audio as a 64-bit RF64 WAV: real sizes in a ds64 chunk, placeholders in the 32-bit fields."""
    data_at = wav.index(b"data")
    fmt, data = wav[12:data_at], wav[data_at + 8:]
    riff_size = 4 + (8 + 28) + len(fmt) + 8 + len(data)
    ds64 = b"ds64" + struct.pack("<IQQQI", 28, riff_size, len(data), len(data) // 4, 0)
    return b"RF64\xff\xff\xff\xffWAVE" + ds64 + fmt + b"data\xff\xff\xff\xff" + data


def test_rf64_sizes_come_from_ds64(tmp_path):
    path = tmp_path / "long.wav"
    whole = rf64_bytes(write_wav(tmp_path / "tone.wav", 0.2).read_bytes())
    path.write_bytes(whole)
    assert is_complete(path) is True
    path.write_bytes(whole[: len(whole) // 2])
    assert is_complete(path) is False
    with pytest.raises(ProbeError, match="unsupported audio: long.wav is an RF64"):
        probe(path)


def test_probing_a_wav_loads_only_the_wave_reader(tmp_path):
    # `ingestd upload` probes one file per start: asked about every format, mutagen imports each format's module
    # first (ASF, AC3, Musepack, …), a tenth of a second of every one-shot upload.
    wav = write_wav(tmp_path / "take.wav", 0.5)
    code = ("import sys; from pathlib import Path; from ingestd.probe import probe; info = probe(Path(sys.argv[1]));"
            " print(info.format, *sorted(m for m in sys.modules if m.startswith('mutagen.')))")
    out = subprocess.run([sys.executable, "-c", code, str(wav)], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "wave"
    assert not {"mutagen.asf", "mutagen.ac3", "mutagen.musepack", "mutagen.oggvorbis", "mutagen.mp3"} & set(out[1:])


def test_a_damaged_ogg_that_breaks_the_tag_reader_is_corrupt_audio(tmp_path):
    # One byte of the Vorbis comment header: mutagen raised IndexError, which a job retried as if transient.
    damaged = bytearray((FIXTURES / "tagged.ogg").read_bytes())
    damaged[241] = 0xD9
    path = tmp_path / "damaged.ogg"
    path.write_bytes(bytes(damaged))
    with pytest.raises(ProbeError, match="^corrupt or truncated audio: damaged.ogg: its headers do not hold together$"):
        probe(path)


@pytest.mark.parametrize("seed", [6, 13, 24, 41])
def test_damaged_copies_of_every_format_are_audio_or_a_probe_error(tmp_path, seed):
    # Seeds 6, 13 and 24 found mutagen raising IndexError on damaged Ogg files.
    rng = random.Random(seed)
    write_wav(tmp_path / "short.wav", 0.05)
    originals = [p.read_bytes() for p in [*sorted(FIXTURES.glob("tagged.*")), tmp_path / "short.wav"]]
    path = tmp_path / "damaged"
    for _ in range(400):
        data = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 12)):
            if len(data) < 2:
                break
            at = rng.randrange(len(data))
            kind = rng.random()
            if kind < 0.5:
                data[at] = rng.randrange(256)
            elif kind < 0.7:
                data[at:at + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff", b"\x00\x00\x00\x08"])
            elif kind < 0.85:
                del data[at:at + rng.randint(1, 200)]
            else:
                del data[max(at, 1):]
        path.write_bytes(bytes(data))
        try:
            assert isinstance(probe(path), AudioInfo)
        except ProbeError:
            pass
