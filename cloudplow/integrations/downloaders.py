"""Download clients paused while cloudplow uploads, resumed when it is done.

    session events ─► DownloaderPauser ─► one client per configured downloader
                           │                 (SABnzbd, NZBGet, qBittorrent)
                           └─ state_dir/downloaders.json: what we paused, for whom

Every client has one narrow interface: `is_paused()`, `pause()` (returns what
it paused, for `resume`) and `resume(paused)`. The pauser pauses every client
when an uploader's first stage starts, and resumes when the last running
session of this process ends (finished, interrupted by SIGTERM, failed). A
client that was already paused before we paused it is left alone: it is
never resumed by us. What we paused is written to the state file (mode 0600)
with the processes holding it (pid and start time, so a recycled pid does not
count), so a session that crashed is made good at the next start, and a
`cloudplow upload` beside the daemon resumes nothing the daemon still needs.
A downloader that is down, or refuses our credentials, only warns.

Facts each client relies on (checked against the Debian packages' daemons:
SABnzbd 3.7.1, NZBGet 21.0, qBittorrent 4.5.2):

- SABnzbd: `GET {url}/api?mode=pause|resume|queue&output=json&apikey=KEY`
  (the key is sent as a query parameter; cloudplow never logs URLs). pause
  and resume answer `{"status": true}`; `mode=queue` answers
  `{"queue": {"paused": bool, ...}}`. A wrong or missing key answers 403
  with a text body ("API Key Incorrect"). Pausing is global, not per job.
- NZBGet: JSON-RPC, `POST {url}/jsonrpc` with HTTP basic auth
  (ControlUsername/ControlPassword), body `{"method": ..., "params": [],
  "id": 1}`; `pausedownload` and `resumedownload` return `{"result": true}`,
  `status` returns `result.DownloadPaused` (the download queue's pause
  register; post-processing and scanning go on). Wrong credentials: 401.
- qBittorrent: WebUI API v2. `POST /api/v2/auth/login` with form fields
  username and password answers "Ok." and a session cookie, "Fails." on
  wrong credentials, 403 once the IP is banned for too many failures.
  Torrents are paused one by one: `GET /api/v2/torrents/info` lists
  `{hash, state}`; before Web API 2.11.0 (qBittorrent 5.0) the calls are
  `torrents/pause` and `torrents/resume` with `hashes=h1|h2` and paused states
  are `pausedUP`/`pausedDL`; from 2.11.0 they are `torrents/stop` and
  `torrents/start` and `stoppedUP`/`stoppedDL` (`GET /api/v2/app/webapiVersion`
  tells which, e.g. "2.8.19" on 4.5.2). There is no global pause that
  remembers the user's own paused torrents, so cloudplow pauses only the
  torrents that run and resumes exactly those.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import requests

from cloudplow import events
from cloudplow.config.load import Downloader
from cloudplow.events import Event
from cloudplow.live import LiveState

logger = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10.0
STATE_FILE = "downloaders.json"


class DownloaderError(Exception):
    """A downloader did not do what we asked: one line naming it, never a credential."""


class DownloadClient(Protocol):
    name: str

    def is_paused(self) -> bool: ...

    def pause(self) -> list[str]: ...

    def resume(self, paused: Sequence[str]) -> None: ...


def _request(name: str, send: Callable[[], requests.Response]) -> requests.Response:
    """Send one request; raise DownloaderError naming the failure, never the URL (it may hold a key)."""
    try:
        response = send()
    except requests.Timeout:
        raise DownloaderError(f"{name}: no answer within {TIMEOUT_SECONDS:.0f} s") from None
    except requests.RequestException as error:
        raise DownloaderError(f"{name}: cannot reach it ({type(error).__name__})") from None
    if response.status_code in (401, 403):
        raise DownloaderError(f"{name}: refused our credentials (HTTP {response.status_code})")
    if response.status_code >= 400:
        raise DownloaderError(f"{name}: answered HTTP {response.status_code}")
    return response


def _json(name: str, response: requests.Response) -> dict:
    try:
        document = response.json()
    except ValueError:
        raise DownloaderError(f"{name}: answered something that is not JSON") from None
    if not isinstance(document, dict):
        raise DownloaderError(f"{name}: answered an unexpected JSON document")
    return document


class SabnzbdClient:
    """SABnzbd's API: a global pause of the download queue."""

    def __init__(self, name: str, url: str, api_key: str | None):
        self.name = name
        self._url = url.rstrip("/") + "/api"
        self._api_key = api_key or ""

    def _call(self, mode: str) -> dict:
        parameters = {"mode": mode, "output": "json", "apikey": self._api_key}
        response = _request(
            self.name, lambda: requests.get(self._url, params=parameters, timeout=TIMEOUT_SECONDS)
        )
        return _json(self.name, response)

    def is_paused(self) -> bool:
        queue = self._call("queue").get("queue")
        if not isinstance(queue, dict) or "paused" not in queue:
            raise DownloaderError(f"{self.name}: its queue has no paused state")
        return bool(queue["paused"])

    def pause(self) -> list[str]:
        if self._call("pause").get("status") is not True:
            raise DownloaderError(f"{self.name}: did not pause")
        return []

    def resume(self, paused: Sequence[str]) -> None:
        if self._call("resume").get("status") is not True:
            raise DownloaderError(f"{self.name}: did not resume")


class NzbgetClient:
    """NZBGet's JSON-RPC: the download queue's pause register."""

    def __init__(self, name: str, url: str, username: str | None, password: str | None):
        self.name = name
        self._url = url.rstrip("/") + "/jsonrpc"
        self._auth = (username or "", password or "")

    def _call(self, method: str) -> object:
        body = {"method": method, "params": [], "id": 1}
        response = _request(
            self.name,
            lambda: requests.post(self._url, json=body, auth=self._auth, timeout=TIMEOUT_SECONDS),
        )
        document = _json(self.name, response)
        if document.get("error"):
            raise DownloaderError(f"{self.name}: {method} failed")
        return document.get("result")

    def is_paused(self) -> bool:
        status = self._call("status")
        if not isinstance(status, dict) or "DownloadPaused" not in status:
            raise DownloaderError(f"{self.name}: its status has no DownloadPaused")
        return bool(status["DownloadPaused"])

    def pause(self) -> list[str]:
        if self._call("pausedownload") is not True:
            raise DownloaderError(f"{self.name}: did not pause")
        return []

    def resume(self, paused: Sequence[str]) -> None:
        if self._call("resumedownload") is not True:
            raise DownloaderError(f"{self.name}: did not resume")


class QbittorrentClient:
    """qBittorrent's WebUI API v2: pauses the running torrents and resumes exactly those."""

    def __init__(self, name: str, url: str, username: str | None, password: str | None):
        self.name = name
        self._url = url.rstrip("/") + "/api/v2"
        self._credentials = {"username": username or "", "password": password or ""}
        self._session: requests.Session | None = None
        self._stop_start: bool | None = None  # Web API >= 2.11.0: torrents/stop and torrents/start

    def _login(self) -> requests.Session:
        session = requests.Session()
        response = _request(
            self.name,
            lambda: session.post(f"{self._url}/auth/login", data=self._credentials, timeout=TIMEOUT_SECONDS),
        )
        if response.text.strip() != "Ok.":
            raise DownloaderError(f"{self.name}: refused our credentials")
        version = _request(
            self.name, lambda: session.get(f"{self._url}/app/webapiVersion", timeout=TIMEOUT_SECONDS)
        ).text.strip()
        try:
            self._stop_start = tuple(int(part) for part in version.split(".")[:2]) >= (2, 11)
        except ValueError:
            raise DownloaderError(f"{self.name}: unexpected Web API version {version[:20]!r}") from None
        self._session = session
        return session

    def _call(self, method: str, path: str, data: dict | None = None) -> requests.Response:
        session = self._session or self._login()
        try:
            return _request(
                self.name,
                lambda: session.request(method, f"{self._url}/{path}", data=data, timeout=TIMEOUT_SECONDS),
            )
        except DownloaderError:
            # The session cookie expires (or the daemon restarted): log in once more.
            session = self._login()
            return _request(
                self.name,
                lambda: session.request(method, f"{self._url}/{path}", data=data, timeout=TIMEOUT_SECONDS),
            )

    def _torrents(self) -> list[dict]:
        torrents = self._call("GET", "torrents/info").json()
        if not isinstance(torrents, list):
            raise DownloaderError(f"{self.name}: its torrent list is not a list")
        return [torrent for torrent in torrents if isinstance(torrent, dict) and "hash" in torrent]

    def running(self) -> list[str]:
        """Return the hashes of the torrents that are not paused (stopped)."""
        return [
            str(torrent["hash"])
            for torrent in self._torrents()
            if not str(torrent.get("state", "")).startswith(("paused", "stopped"))
        ]

    def is_paused(self) -> bool:
        return not self.running()

    def pause(self) -> list[str]:
        hashes = self.running()
        if hashes:
            action = "torrents/stop" if self._stop_start else "torrents/pause"
            self._call("POST", action, {"hashes": "|".join(hashes)})
        return hashes

    def resume(self, paused: Sequence[str]) -> None:
        if paused:
            action = "torrents/start" if self._stop_start else "torrents/resume"
            self._call("POST", action, {"hashes": "|".join(paused)})


def client_for(downloader: Downloader) -> DownloadClient:
    """Given a configured downloader, return the client that speaks its API."""
    if downloader.kind == "sabnzbd":
        return SabnzbdClient(downloader.name, downloader.url, downloader.api_key)
    if downloader.kind == "nzbget":
        return NzbgetClient(downloader.name, downloader.url, downloader.username, downloader.password)
    if downloader.kind == "qbittorrent":
        return QbittorrentClient(downloader.name, downloader.url, downloader.username, downloader.password)
    raise ValueError(f"downloaders: unknown kind {downloader.kind}")


def process_identity(pid: int) -> str | None:
    """Return "pid:start time" of a live process (a recycled pid gets another), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # Field 22 (starttime) counted after the command name, which may hold spaces and parentheses.
    fields = stat.rsplit(")", 1)[-1].split()
    return f"{pid}:{fields[19]}" if len(fields) > 19 else None


def _holder_alive(holder: str) -> bool:
    pid, _, _ = holder.partition(":")
    return pid.isdigit() and process_identity(int(pid)) == holder


class DownloaderPauser:
    """
    A session listener that pauses the configured downloaders while any
    session of this process uploads, and resumes them after the last one.
    `recover()` at start resumes what a crashed process left paused.
    """

    def __init__(
        self,
        clients: Sequence[DownloadClient],
        state_dir: Path,
        *,
        live: LiveState | None = None,
        identity: str | None = None,
    ):
        self.clients = {client.name: client for client in clients}
        self.state_path = state_dir / STATE_FILE
        self.live = live
        self.identity = identity or process_identity(os.getpid()) or f"{os.getpid()}:0"
        self._uploading: set[str] = set()
        self._lock = threading.Lock()
        self._warned: set[str] = set()  # one warning per outage, not one per session
        if live is not None:
            for name in self.clients:
                live.set_downloader(name, paused=False)

    def on_event(self, event: Event) -> None:
        if event.kind == events.STAGE_STARTED:
            with self._lock:
                first = not self._uploading
                self._uploading.add(event.uploader)
                if first:
                    self._pause_all()
        elif event.kind in (events.SESSION_ENDED, events.SESSION_FAILED):
            with self._lock:
                if event.uploader not in self._uploading:
                    return
                self._uploading.discard(event.uploader)
                if not self._uploading:
                    self._release()

    def recover(self) -> None:
        """At start: resume what no live cloudplow process holds any more (a crash left it paused)."""
        with self._lock:
            self._release()

    def close(self) -> None:
        """Resume whatever this process still holds (a session that never announced its end)."""
        with self._lock:
            if self._uploading:
                self._uploading.clear()
                self._release()

    @contextlib.contextmanager
    def _state(self) -> Iterator[dict[str, dict]]:
        """
        Hold the state's lock across processes; yield its entries and write them back
        atomically (a crash mid-write leaves the previous state, never half of one).
        """
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        lock_descriptor = os.open(f"{self.state_path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        with open(lock_descriptor, "r+", encoding="utf-8") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                text = self.state_path.read_text(encoding="utf-8")
            except FileNotFoundError:
                text = ""
            try:
                entries = json.loads(text)["paused"] if text.strip() else {}
            except (ValueError, KeyError, TypeError):
                logger.warning("%s is not readable; starting it afresh", self.state_path)
                entries = {}
            yield entries
            temporary = self.state_path.with_name(f"{self.state_path.name}.tmp")
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(descriptor, "w", encoding="utf-8") as state_file:
                os.fchmod(state_file.fileno(), 0o600)
                json.dump({"paused": entries}, state_file, indent=2, sort_keys=True)
                state_file.flush()
                os.fsync(state_file.fileno())
            os.replace(temporary, self.state_path)

    def _pause_all(self) -> None:
        with self._state() as entries:
            for name, client in self.clients.items():
                entry = entries.get(name)
                try:
                    if entry is None and client.is_paused():
                        logger.info("downloader %s: already paused; it stays paused after uploading", name)
                        self._warned.discard(name)
                        continue
                    paused = client.pause()
                except DownloaderError as error:
                    self._warn(name, f"downloader {error}; uploading anyway")
                    continue
                self._warned.discard(name)
                if entry is None:
                    entry = entries[name] = {"holders": [], "paused": []}
                entry["holders"] = sorted({*entry["holders"], self.identity})
                entry["paused"] = sorted({*entry["paused"], *paused})
                logger.info("downloader %s: paused while uploading", name)
                if self.live is not None:
                    self.live.set_downloader(name, paused=True)

    def _release(self) -> None:
        with self._state() as entries:
            for name in list(entries):
                entry = entries[name]
                holders = [
                    holder
                    for holder in entry.get("holders", ())
                    if holder != self.identity and _holder_alive(holder)
                ]
                entry["holders"] = holders
                if holders:
                    # Another cloudplow process still uploads: the last one to end resumes.
                    if self.live is not None:
                        self.live.set_downloader(name, paused=False)
                    continue
                client = self.clients.get(name)
                if client is None:
                    logger.warning("downloader %s: paused by cloudplow but no longer configured", name)
                    del entries[name]
                    continue
                try:
                    client.resume(entry.get("paused", ()))
                except DownloaderError as error:
                    # Kept in the state file: the next session's end, or the next start, tries again.
                    self._warn(name, f"downloader {error}; will try to resume it later")
                    continue
                del entries[name]
                self._warned.discard(name)
                logger.info("downloader %s: resumed", name)
                if self.live is not None:
                    self.live.set_downloader(name, paused=False)

    def _warn(self, name: str, message: str) -> None:
        if name not in self._warned:
            self._warned.add(name)
            logger.warning("%s", message)
        else:
            logger.debug("%s", message)
