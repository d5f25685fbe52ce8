"""The peers cloudplow lives beside, each one file behind one narrow interface.

The session imports none of them: the daemon and the `upload` command build
the listeners here from the configuration and hand them to the session.
A listener may also have `recover()` (called once at start) and `close()`
(called once at the end); `start_all` and `close_all` call them, and a
failure there only warns, like a failing listener.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from cloudplow.config import Config
from cloudplow.events import Listener
from cloudplow.integrations.downloaders import DownloaderPauser, client_for
from cloudplow.live import LiveState

logger = logging.getLogger(__name__)


def listeners_for(config: Config, *, live: LiveState | None = None) -> list[Listener]:
    """Given the configuration, return the listeners of every configured integration."""
    return [*downloader_listeners(config, live=live)]


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
