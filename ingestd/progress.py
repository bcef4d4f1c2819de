"""What ``ingestd upload`` shows while it works: a bar while parts go up, then a spinner while the media transcodes.

Drawn by rich on stderr. On a terminal both redraw in place and their last state stays on screen as the summary;
into a file or a pipe each is written once, when it ends, so logs get the summary without the redraws.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn, TransferSpeedColumn)


class UploadProgress:
    def __init__(self, name: str, console: Console | None = None):
        self.name = name
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=False)
        self._upload: Progress | None = None
        self._upload_task: TaskID | None = None
        self._transcode: Progress | None = None
        self._transcode_task: TaskID | None = None
        self._media_id = ""

    @property
    def _redraws(self) -> bool:
        # Off a terminal nothing is drawn until the end, so no thread rebuilds the bar ten times a second for nobody
        # (a quarter of a CPU second per GiB uploaded).
        return self.console.is_terminal

    def bytes(self, job_id: str, sent: int, total: int) -> None:
        """The pipeline's progress callback: bytes of the file acknowledged or in flight so far."""
        if self._upload is None:
            self._upload = Progress(
                TextColumn("upload {task.description}", markup=False), BarColumn(), DownloadColumn(binary_units=True),
                TransferSpeedColumn(), TimeRemainingColumn(compact=True, elapsed_when_finished=True),
                console=self.console, auto_refresh=self._redraws)
            self._upload.start()
            self._upload_task = self._upload.add_task(self.name, total=total, completed=sent)
            return
        assert self._upload_task is not None
        self._upload.update(self._upload_task, completed=sent, total=total)

    def transcoding(self, media_id: str, status: str) -> None:
        """The media's status while the service works on it, with a spinner and the time it has taken."""
        self._end_upload()
        self._media_id = media_id
        description = f"media {media_id}: {status}"
        if self._transcode is None:
            self._transcode = Progress(SpinnerColumn(finished_text="✓"), TextColumn("{task.description}", markup=False),
                                       TimeElapsedColumn(), console=self.console, auto_refresh=self._redraws)
            self._transcode.start()
            self._transcode_task = self._transcode.add_task(description, total=1)
            return
        assert self._transcode_task is not None
        self._transcode.update(self._transcode_task, description=description)

    def line(self, text: str) -> None:
        """A line that stays (printed above a bar or spinner still running)."""
        # soft_wrap: the terminal wraps a long line (a path), rather than rich cutting it with newlines.
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def close(self, *, finished: bool) -> None:
        """End the bar and the spinner where they are; ``finished`` ticks the spinner off."""
        self._end_upload()
        if self._transcode is not None:
            assert self._transcode_task is not None
            if finished:
                self._transcode.update(self._transcode_task, completed=1, description=f"media {self._media_id}: transcoded")
            self._transcode.stop()
            self._transcode = None

    def _end_upload(self) -> None:
        if self._upload is not None:
            self._upload.stop()
            self._upload = None
