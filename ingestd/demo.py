"""``ingestd demo``: the emulator and the daemon on a temporary folder, end to end.

It writes a real config, starts the local emulator on a free loopback port,
runs the daemon's service in this process, drops a generated WAV episode into
the watched folder, and waits until the file is published and filed in done/.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import tempfile
import time
import wave
from pathlib import Path

import structlog

from . import log as logsetup
from . import queue as q
from .client import StreamClient
from .config import load_config
from .emulator import Account, Emulator, EmulatorSettings
from .service import Service

DEMO_TOKEN = "demo-token-not-a-secret"
TIMEOUT = 120.0

CONFIG = """\
api:
  base_url: {base_url}
  token: ${{DEMO_TOKEN:-{token}}}
state_dir: {root}/state
upload:
  workers: 2
  chunk_size: 5MiB
  poll_interval: 0.5
presets:
  podcast:
    - resolution: highest
      type: hls
      container_type: mpegts
      audio_config: {{codec: aac, bitrate: 320000, channels: "2", sample_rate: 44100, language: en, index: 0}}
    - resolution: standard
      type: dash
      container_type: fmp4
      audio_config: {{codec: aac, bitrate: 128000, channels: "2", sample_rate: 44100, language: en, index: 0}}
folders:
  - path: {root}/inbox
    settle: 1
    done_dir: {root}/done
    failed_dir: {root}/failed
defaults:
  is_public: true
  tags: [demo]
rules:
  - name: weekly
    match:
      folder: "shows/*"
      regex: '^(?P<show>.+)_ep(?P<ep>\\d+)\\.wav$'
    title: "{{show!title}} - Episode {{ep}}"
    description: "Recorded for the {{show}} show."
    tags: ["{{show}}"]
    metadata: {{show: "{{show}}", episode: "{{ep}}"}}
    qualities: podcast
    publish: on_done
  - name: default
    title: "{{stem}}"
"""


def _write_episode(path: Path, seconds: float) -> None:
    """A real 16-bit stereo WAV: a tone that rises, so it is recognisably audio."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = 44100
    partial = path.with_name("." + path.name + ".part")  # hidden while being written, like a careful copy
    with wave.open(str(partial), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(rate)
        for second in range(int(seconds)):
            freq = 220 + 20 * second
            frame = b"".join(struct.pack("<hh", v, v) for v in (int(9000 * math.sin(2 * math.pi * freq * i / rate)) for i in range(rate)))
            out.writeframes(frame)
    partial.rename(path)


def run_demo(*, keep: bool = False) -> int:
    logsetup.configure(format="console", level="info")
    log = structlog.get_logger("ingestd.demo")
    root = Path(tempfile.mkdtemp(prefix="ingestd-demo-"))
    emulator = Emulator(
        EmulatorSettings(accounts=[Account(token=DEMO_TOKEN, public_key="demo-public", secret_key="demo-secret-key")],
                         transcode_delay=2.0, strict_official=True),  # the demo speaks only proven forms too
        data_dir=root / "emulator",
    ).start()
    service = None
    try:
        log.info("demo_emulator_started", base_url=emulator.base_url, folder=str(root))
        config_file = root / "config.yaml"
        config_file.write_text(CONFIG.format(base_url=emulator.base_url, token=DEMO_TOKEN, root=root))
        for name in ("inbox", "done", "failed"):
            (root / name).mkdir()
        config = load_config(config_file)
        service = Service(config)
        service.start()
        log.info("demo_daemon_ready", watching=str(root / "inbox"))

        episode = root / "inbox" / "shows" / "studio-talk" / "studio-talk_ep7.wav"
        _write_episode(episode, seconds=70)  # ~12 MiB: three 5 MiB parts
        log.info("demo_file_dropped", path=str(episode), size=episode.stat().st_size)

        deadline = time.monotonic() + TIMEOUT
        job = None
        while time.monotonic() < deadline:
            jobs = service.queue.list(limit=1)
            job = jobs[0] if jobs else None
            if job is not None and job.state in q.FINAL_STATES:
                break
            time.sleep(0.2)
        if job is None or job.state != q.DONE:
            log.error("demo_failed", state=job.state if job else "never queued", error=job.error if job else None)
            return 1
        with StreamClient(emulator.base_url, token=DEMO_TOKEN) as client:
            media = client.get_media(job.media_id)
        report = Path(job.final_path).with_name(Path(job.final_path).name + ".ingestd.json")
        print()
        print(f"Published: {media.title!r} ({media.duration:.1f} s, {media.size} bytes, status {media.status}, "
              f"public: {media.is_public})")
        print(f"  media id:   {media.id}")
        print(f"  tags:       {', '.join(media.tags or [])}")
        print(f"  HLS:        {media.assets.hls_url}")
        print(f"  DASH:       {media.assets.dash_url}")
        print(f"  player:     {media.assets.hls_player_url}")
        print(f"  file now:   {job.final_path}")
        print(f"  report:     {report}")
        print(json.dumps(json.loads(report.read_text()), indent=2))
        return 0
    finally:
        if service is not None:
            service.stop()
        emulator.stop()
        if keep:
            print(f"demo folder kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
