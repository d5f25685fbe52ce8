"""Notifications through apprise: a session listener that tells people what they would want to know.

    session events -> message_for() -> filtered by notifications.events
      -> Coalescer (at most one message per kind per minute; the rest wait and
         go out together) -> a sender thread -> apprise, one URL at a time

The kinds, and the events they come from (cloudplow/events.py):
- session_finished: session_ended with exit code 0, or interrupted (files,
  bytes, accounts used, duration); a session that had nothing to do is quiet;
- pool_exhausted: session_ended with exit code 3 (files and bytes left, when
  the first account frees up);
- account_broken: account_broken;
- failed: session_failed, and session_ended with exit code 1.

Every message is built from counts, names and cloudplow's own messages, and
every configured secret (account environment values, tokens, passwords,
the notification URLs themselves) is masked out of it before it leaves.
Delivery happens on the sender thread, so a slow or dead service never holds
a session up; a failed delivery warns and counts in
cloudplow_notifications_failed_total. What is still held when cloudplow stops
is sent then, in one message per kind.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cloudplow import events
from cloudplow.config import Config
from cloudplow.events import Event
from cloudplow.units import format_duration, format_size

logger = logging.getLogger(__name__)

SESSION_FINISHED = "session_finished"
POOL_EXHAUSTED = "pool_exhausted"
ACCOUNT_BROKEN = "account_broken"
FAILED = "failed"
KINDS = (SESSION_FINISHED, POOL_EXHAUSTED, ACCOUNT_BROKEN, FAILED)
COALESCE_SECONDS = 60.0
MASK = "***"
_TITLES = {
    SESSION_FINISHED: "session finished",
    POOL_EXHAUSTED: "pool exhausted",
    ACCOUNT_BROKEN: "account broken",
    FAILED: "failed",
}


@dataclass(frozen=True)
class Message:
    kind: str
    title: str
    body: str


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def _files(count: object) -> str:
    return f"{count} file" + ("" if count == 1 else "s")


def _when(timestamp: float, now: float) -> str:
    moment = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{moment} (in {format_duration(timestamp - now)})"


def message_for(event: Event) -> Message | None:
    """Given a session event, return the message it deserves, or None for events nobody is told of."""
    data, uploader = event.data, event.uploader
    if event.kind == events.SESSION_ENDED:
        exit_code = data.get("exit_code")
        uploaded = (
            f"{_files(data.get('uploaded_files', 0))}, {format_size(_number(data.get('uploaded_bytes')))}"
        )
        accounts = list(data.get("accounts_used") or ())  # type: ignore[call-overload]
        through = f" through {len(accounts)} account(s) ({', '.join(map(str, accounts))})" if accounts else ""
        duration = format_duration(_number(data.get("duration_seconds")))
        left = f"{_files(data.get('left_files', 0))}, {format_size(_number(data.get('left_bytes')))}"
        session = f"Session {data.get('session_id')} of {uploader}"
        if data.get("state") == "interrupted":
            return Message(
                SESSION_FINISHED,
                f"cloudplow: {uploader}: session interrupted",
                f"{session} was interrupted after uploading {uploaded}{through} in {duration};"
                f" {left} stay in the source.",
            )
        if exit_code == 0:
            if not data.get("uploaded_files") and not data.get("left_files"):
                return None  # nothing was queued: not news
            return Message(
                SESSION_FINISHED,
                f"cloudplow: {uploader}: session finished",
                f"{session} uploaded {uploaded}{through} in {duration}.",
            )
        if exit_code == 3:
            frees_at = data.get("frees_at")
            frees = (
                f" The first account frees up at {_when(_number(frees_at), event.at)}."
                if frees_at is not None
                else " No account frees up on its own: check the blocks (cloudplow quota)."
            )
            return Message(
                POOL_EXHAUSTED,
                f"cloudplow: {uploader}: every account is out of quota",
                f"{session} uploaded {uploaded}{through} in {duration}; {left} are left for a"
                f" later session.{frees}",
            )
        return Message(
            FAILED,
            f"cloudplow: {uploader}: session failed",
            f"{session} ended with exit code {exit_code}: {data.get('message')}. It uploaded"
            f" {uploaded}{through} in {duration}; {left} stay in the source.",
        )
    if event.kind == events.ACCOUNT_BROKEN:
        return Message(
            ACCOUNT_BROKEN,
            f"cloudplow: {uploader}: account {data.get('account')} is broken",
            f"Account {data.get('account')} of {uploader} is broken and left out of the pool:"
            f" {data.get('message')}",
        )
    if event.kind == events.SESSION_FAILED:
        return Message(FAILED, f"cloudplow: {uploader}: session failed", f"{uploader}: {data.get('message')}")
    return None


def mask(text: str, secrets: Iterable[str]) -> str:
    """Given text and secret values, return the text with every one of them replaced by ***."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def config_secrets(config: Config) -> tuple[str, ...]:
    """Every credential the configuration holds, to be kept out of messages (short values excepted)."""
    values: list[str] = []
    for uploader in config.uploaders.values():
        for account in uploader.accounts:
            values.extend(account.env.values())
    values.extend(server.token for server in config.media_servers)
    for downloader in config.downloaders:
        values.extend(value for value in (downloader.api_key, downloader.password) if value)
    if config.notifications is not None:
        values.extend(config.notifications.urls)
    if config.state.url:
        values.append(config.state.url)
    # A two-letter "secret" would mask words out of every message, and a value that is an account's
    # or an uploader's name (a WebDAV user called like its account) is shown everywhere anyway.
    shown = {account.name for uploader in config.uploaders.values() for account in uploader.accounts}
    shown |= set(config.uploaders)
    return tuple(
        value for value in values if isinstance(value, str) and len(value) >= 4 and value not in shown
    )


class Coalescer:
    """At most one message per kind per window: the first goes at once, later ones wait and go together."""

    def __init__(self, window_seconds: float = COALESCE_SECONDS):
        self.window_seconds = window_seconds
        self._last_sent: dict[str, float] = {}
        self._held: dict[str, list[Message]] = {}

    def offer(self, message: Message, now: float) -> Message | None:
        """Given a new message, return it if it may go now; else hold it and return None."""
        last = self._last_sent.get(message.kind)
        if (last is not None and now - last < self.window_seconds) or message.kind in self._held:
            self._held.setdefault(message.kind, []).append(message)
            return None
        self._last_sent[message.kind] = now
        return message

    def due(self, now: float) -> list[Message]:
        """Return one combined message per kind whose window has passed, and forget them."""
        ready = []
        for kind in list(self._held):
            if now - self._last_sent.get(kind, now - self.window_seconds) >= self.window_seconds:
                ready.append(combine(self._held.pop(kind)))
                self._last_sent[kind] = now
        return ready

    def drain(self) -> list[Message]:
        """Return everything held, one combined message per kind (when stopping)."""
        ready = [combine(held) for held in self._held.values()]
        self._held.clear()
        return ready


def combine(messages: Sequence[Message]) -> Message:
    if len(messages) == 1:
        return messages[0]
    first = messages[0]
    return Message(
        first.kind,
        f"cloudplow: {len(messages)} × {_TITLES[first.kind]}",
        "\n\n".join(f"{message.title.removeprefix('cloudplow: ')}\n{message.body}" for message in messages),
    )


Deliver = Callable[[str, Message], bool]


def apprise_deliver(url: str, message: Message) -> bool:
    """Send one message to one apprise URL; return whether it was delivered."""
    import apprise  # a few hundred plugins: loaded only when used

    sender = apprise.Apprise()
    if not sender.add(url):
        return False
    return bool(sender.notify(title=message.title, body=message.body))


def _scheme(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else "?"


class Notifier:
    """The listener: turns events into messages, coalesces them and sends them on its own thread."""

    def __init__(
        self,
        urls: Sequence[str],
        kinds: Iterable[str] = KINDS,
        *,
        secrets: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
        deliver: Deliver = apprise_deliver,
        window_seconds: float = COALESCE_SECONDS,
    ):
        self.urls = tuple(urls)
        self.kinds = frozenset(kinds)
        self.secrets = tuple(secrets) + self.urls
        self.clock = clock
        self.deliver = deliver
        self.coalescer = Coalescer(window_seconds)
        self.sent_total = 0
        self.failed_total = 0
        self._lock = threading.Lock()
        self._outbox: queue.Queue[Message | None] = queue.Queue()
        # apprise's debug lines name the services' URLs, which hold tokens: keep them out of -v logs.
        logging.getLogger("apprise").setLevel(max(logging.WARNING, logging.getLogger("apprise").level))
        self._thread = threading.Thread(target=self._run, name="notifications", daemon=True)
        self._thread.start()

    def on_event(self, event: Event) -> None:
        message = message_for(event)
        if message is None or message.kind not in self.kinds:
            return
        message = Message(message.kind, mask(message.title, self.secrets), mask(message.body, self.secrets))
        with self._lock:
            ready = self.coalescer.offer(message, self.clock())
        if ready is not None:
            self._outbox.put(ready)

    def _run(self) -> None:
        while True:
            try:
                message = self._outbox.get(timeout=0.2)
            except queue.Empty:
                with self._lock:
                    due = self.coalescer.due(self.clock())
                for held in due:
                    self._send(held)
                continue
            if message is None:
                return
            self._send(message)

    def _send(self, message: Message) -> None:
        for index, url in enumerate(self.urls):
            try:
                delivered = self.deliver(url, message)
            except Exception as error:  # a peer's failure only warns
                logger.debug("notification delivery raised", exc_info=True)
                delivered, reason = False, type(error).__name__
            else:
                reason = "not delivered"
            with self._lock:
                if delivered:
                    self.sent_total += 1
                else:
                    self.failed_total += 1
            if not delivered:
                logger.warning(
                    "notification '%s' to notifications.urls[%d] (%s://): %s",
                    message.kind,
                    index,
                    _scheme(url),
                    reason,
                )

    def counts(self) -> tuple[int, int]:
        """(sent, failed) deliveries so far."""
        with self._lock:
            return self.sent_total, self.failed_total

    def close(self, timeout_seconds: float = 15.0) -> None:
        """Send what is held (one message per kind), wait for the sender up to the timeout, stop it."""
        with self._lock:
            held = self.coalescer.drain()
        for message in held:
            self._outbox.put(message)
        self._outbox.put(None)
        self._thread.join(timeout=timeout_seconds)
