"""The peers cloudplow lives beside, one module per kind, built from the configuration in one place.

    media_servers.py   Plex, Jellyfin, Emby: poll() -> streams
    throttle.py        streams -> the rate uploads may use (rclone's core/bwlimit)
    notifications.py   session events -> apprise messages
    downloaders.py     SABnzbd, NZBGet, qBittorrent: paused while sessions upload

A listener may also have `recover()` (called once at start, e.g. to resume
downloaders a crashed process left paused) and `close()` (called once at the
end); a failure there only warns, like a failing listener.

`integrations_for(config)` builds what the configuration asks for; the daemon
and the `upload` command hand its listeners to every session, its rate
provider to the uploaders it applies to, and its collectors to /metrics.
A peer's failure only ever warns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from prometheus_client.registry import Collector

from cloudplow.config import Config, Uploader
from cloudplow.events import Listener
from cloudplow.integrations.downloaders import DownloaderPauser, client_for
from cloudplow.integrations.notifications import Notifier, config_secrets
from cloudplow.integrations.throttle import Throttle, applies_to
from cloudplow.live import LiveState
from cloudplow.metrics import NotificationsCollector, ThrottleCollector

logger = logging.getLogger(__name__)


@dataclass
class Integrations:
    """What the configured integrations give a daemon or a command: listeners, a throttle, collectors."""

    listeners: list[Listener] = field(default_factory=list)
    throttle: Throttle | None = None
    notifier: Notifier | None = None
    collectors: list[Collector] = field(default_factory=list)
    closers: list[Callable[[], None]] = field(default_factory=list)

    def start(self) -> Integrations:
        if self.throttle is not None:
            self.throttle.start()
        start_all(self.listeners)
        return self

    def rate_limit_for(self, uploader: Uploader) -> Callable[[], int] | None:
        """The rate a session of this uploader follows, or None when nothing throttles it."""
        return self.throttle.rate_limit_for(uploader) if self.throttle is not None else None

    def status(self, config: Config) -> dict:
        """The integrations' part of /status (no credentials in it)."""
        if self.throttle is None:
            return {}
        snapshot = self.throttle.snapshot()
        snapshot["uploaders"] = {
            name: snapshot["rate_bytes"] if applies_to(uploader) else 0
            for name, uploader in config.uploaders.items()
        }
        return {"throttle": snapshot}

    def close(self) -> None:
        close_all(self.listeners)
        if self.throttle is not None:
            self.throttle.stop()
        if self.notifier is not None:
            self.notifier.close()
        for close in self.closers:
            close()


def throttle_and_notifications(config: Config, *, clock: Callable[[], float] = time.time) -> Integrations:
    """Given the configuration, build the media-server throttle and the notifier it asks for."""
    integrations = Integrations()
    if config.media_servers:
        integrations.throttle = Throttle.from_config(config.media_servers)
        integrations.collectors.append(ThrottleCollector(lambda: integrations.status(config)["throttle"]))
    if config.notifications is not None and config.notifications.urls:
        integrations.notifier = Notifier(
            config.notifications.urls,
            config.notifications.events,
            secrets=config_secrets(config),
            clock=clock,
        )
        integrations.listeners.append(integrations.notifier)
        integrations.collectors.append(NotificationsCollector(integrations.notifier.counts))
    return integrations


def integrations_for(
    config: Config, *, clock: Callable[[], float] = time.time, live: LiveState | None = None
) -> Integrations:
    """Everything the configuration asks for, not started (`start()` it, `close()` it after)."""
    integrations = throttle_and_notifications(config, clock=clock)
    integrations.listeners.extend(downloader_listeners(config, live=live))
    return integrations


def downloader_listeners(config: Config, *, live: LiveState | None = None) -> list[Listener]:
    """The downloader pauser, when downloaders are configured."""
    if not config.downloaders:
        return []
    clients = [client_for(downloader) for downloader in config.downloaders]
    return [DownloaderPauser(clients, config.state_dir, live=live)]


def start_all(listeners: Sequence[object]) -> None:
    """Let each listener make good what a crashed process left (e.g. resume paused downloaders)."""
    for listener in listeners:
        recover = getattr(listener, "recover", None)
        if recover is None:
            continue
        try:
            recover()
        except Exception:
            logger.exception("%s failed to start", type(listener).__name__)


def close_all(listeners: Sequence[object]) -> None:
    """Let each listener undo what it still holds (e.g. resume paused downloaders)."""
    for listener in listeners:
        close = getattr(listener, "close", None)
        if close is None:
            continue
        try:
            close()
        except Exception:
            logger.exception("%s failed to close", type(listener).__name__)
