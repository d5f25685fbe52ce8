"""The live terminal display of `cloudplow upload`: a session listener drawn with rich.

    session events ─► ProgressModel (what is done, per stage) ─► render() ─► rich Live

One line per stage (account, files and bytes done of what the plan gave it:
the stage's planned bytes, not rclone's total, which grows as rclone finds
more to do), a total bar over the session's queue with the rate and the time
left, and the current throttle. Bytes done are the sizes of the files that
finished plus what is in flight (rclone's `transferring` list), never more
than planned.

The throttle (bytes per second, 0 = unlimited, as the
`cloudplow_throttle_rate_bytes` gauge) comes from the rate provider the
session follows, when the caller hands one to `session(rate=...)`, or else
from the events: a `throttle_changed` event's `rate_bytes`, or
`throttle_rate_bytes` in any event's data. Without any the line says
"unlimited".

The display is only for a terminal; without one, `upload` keeps its periodic
log lines (cloudplow.session.progress) and draws nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from cloudplow import events
from cloudplow.events import Event
from cloudplow.units import format_duration, format_size

THROTTLE_CHANGED = "throttle_changed"


@dataclass
class StageLine:
    number: int
    account: str
    planned_files: int
    planned_bytes: int
    done_files: int = 0
    done_bytes: int = 0  # sizes of the files that finished uploading
    failed_files: int = 0
    in_flight_bytes: int = 0
    outcome: str | None = None  # None while it runs

    @property
    def shown_bytes(self) -> int:
        return min(self.planned_bytes, self.done_bytes + self.in_flight_bytes)


@dataclass
class UploaderProgress:
    queue_files: int = 0
    queue_bytes: int = 0
    stages: list[StageLine] = field(default_factory=list)
    speed: float = 0.0
    message: str | None = None  # set when the session ended

    @property
    def done_bytes(self) -> int:
        return min(self.queue_bytes, sum(stage.shown_bytes for stage in self.stages))

    @property
    def done_files(self) -> int:
        return sum(stage.done_files for stage in self.stages)


class ProgressModel:
    """What the display shows, updated from session events (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.uploaders: dict[str, UploaderProgress] = {}
        self.throttle_bytes = 0  # bytes per second, 0 = unlimited
        self.rate: Callable[[], int] | None = None  # the throttle the session follows, if any

    def current_throttle(self) -> int:
        if self.rate is not None:
            # A failing provider changes nothing, as in the stage loop.
            with contextlib.suppress(Exception):
                self.throttle_bytes = int(self.rate())
        return self.throttle_bytes

    def on_event(self, event: Event) -> None:
        with self.lock:
            self._apply(event)

    def _apply(self, event: Event) -> None:
        data = event.data
        rate = data.get("rate_bytes") if event.kind == THROTTLE_CHANGED else data.get("throttle_rate_bytes")
        if isinstance(rate, int | float):
            self.throttle_bytes = int(rate)
        if event.kind == events.SESSION_STARTED:
            self.uploaders[event.uploader] = UploaderProgress(
                queue_files=int(data.get("queue_files", 0)),  # type: ignore[call-overload]
                queue_bytes=int(data.get("queue_bytes", 0)),  # type: ignore[call-overload]
            )
            return
        progress = self.uploaders.setdefault(event.uploader, UploaderProgress())
        if event.kind == events.STAGE_STARTED:
            progress.stages.append(
                StageLine(
                    number=int(data.get("stage", len(progress.stages) + 1)),  # type: ignore[call-overload]
                    account=str(data.get("account", "")),
                    planned_files=int(data.get("files", 0)),  # type: ignore[call-overload]
                    planned_bytes=int(data.get("bytes", 0)),  # type: ignore[call-overload]
                )
            )
            progress.speed = 0.0
            return
        stage = progress.stages[-1] if progress.stages else None
        if event.kind == events.FILE_DONE and stage is not None:
            if data.get("outcome") == "uploaded":
                stage.done_files += 1
                stage.done_bytes += int(data.get("size", 0))  # type: ignore[call-overload]
            elif data.get("outcome") == "failed":
                stage.failed_files += 1
        elif event.kind == events.PROGRESS and stage is not None:
            stats = data.get("stats")
            if isinstance(stats, dict):
                progress.speed = float(stats.get("speed") or 0)
                stage.in_flight_bytes = sum(
                    int(transfer.get("bytes") or 0)
                    for transfer in stats.get("transferring") or ()
                    if isinstance(transfer, dict)
                )
        elif event.kind == events.STAGE_ENDED and stage is not None:
            stage.outcome = str(data.get("outcome", "ended"))
            stage.in_flight_bytes = 0
            progress.speed = 0.0
        elif event.kind == events.SESSION_ENDED:
            progress.message = str(data.get("message", ""))
            progress.speed = 0.0
            for line in progress.stages:
                line.in_flight_bytes = 0
        elif event.kind == events.SESSION_FAILED:
            progress.message = f"failed: {data.get('message', '')}"
            progress.speed = 0.0


def render(model: ProgressModel, *, bar_width: int = 30) -> RenderableType:
    """Given the model, return what the terminal shows now."""
    with model.lock:
        parts: list[RenderableType] = []
        for name, progress in model.uploaders.items():
            stages = Table.grid(padding=(0, 2))
            for _ in range(5):
                stages.add_column()
            for stage in progress.stages:
                failed = f", {stage.failed_files} failed" if stage.failed_files else ""
                stages.add_row(
                    f"  stage {stage.number}",
                    stage.account,
                    f"{stage.done_files}/{stage.planned_files} files{failed}",
                    f"{format_size(stage.shown_bytes)} / {format_size(stage.planned_bytes)}",
                    stage.outcome or "uploading",
                )
            total = Table.grid(padding=(0, 1))
            for _ in range(3):
                total.add_column()
            done, queued = progress.done_bytes, progress.queue_bytes
            percent = 100 * done / queued if queued else 100.0
            rate = f"{format_size(progress.speed)}/s" if progress.speed > 0 else "-"
            eta = (
                format_duration((queued - done) / progress.speed)
                if progress.speed > 0 and progress.message is None
                else "-"
            )
            total.add_row(
                Text(f"{name}  total"),
                ProgressBar(total=max(queued, 1), completed=done if queued else 1, width=bar_width),
                Text(
                    f"{percent:3.0f}%  {progress.done_files}/{progress.queue_files} files"
                    f"  {format_size(done)} / {format_size(queued)}  {rate}  ETA {eta}"
                ),
            )
            parts.extend([total, stages])
            if progress.message is not None:
                parts.append(Text(f"  {progress.message}"))
        throttle_bytes = model.current_throttle()
        throttle = f"{format_size(throttle_bytes)}/s" if throttle_bytes > 0 else "unlimited"
        parts.append(Text(f"throttle: {throttle}"))
        return Group(*parts)


class ConsoleLogHandler(logging.Handler):
    """Writes log records through the rich console, so they scroll above the live display."""

    def __init__(self, console: Console, formatter: logging.Formatter | None = None):
        super().__init__()
        self.console = console
        if formatter is not None:
            self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.print(self.format(record), markup=False, highlight=False, soft_wrap=True)
        except Exception:
            self.handleError(record)


class ProgressDisplay:
    """A session listener that draws the model live on a terminal while `session()` is open."""

    def __init__(self, console: Console, *, refresh_per_second: float = 4):
        self.console = console
        self.model = ProgressModel()
        self.refresh_per_second = refresh_per_second

    def on_event(self, event: Event) -> None:
        self.model.on_event(event)

    @contextlib.contextmanager
    def session(self, *, rate: Callable[[], int] | None = None) -> Iterator[None]:
        """
        Draw live until the block ends; log lines meanwhile go through the console, above it.
        `rate` is the throttle the session follows (bytes per second, 0 = unlimited), if any.
        """
        with self.model.lock:
            self.model.uploaders.clear()  # each session draws its own lines; the last ones stay above
            self.model.rate = rate
        root = logging.getLogger()
        streams = [handler for handler in root.handlers if type(handler) is logging.StreamHandler]
        formatter = streams[0].formatter if streams else None
        handler = ConsoleLogHandler(self.console, formatter)
        for stream in streams:
            root.removeHandler(stream)
        root.addHandler(handler)
        try:
            with Live(
                get_renderable=lambda: render(self.model),
                console=self.console,
                refresh_per_second=self.refresh_per_second,
                redirect_stdout=False,
                redirect_stderr=False,
            ):
                yield
        finally:
            root.removeHandler(handler)
            for stream in streams:
                root.addHandler(stream)
