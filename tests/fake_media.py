"""Local stand-ins for Plex, Jellyfin and Emby, speaking their session APIs as their documentation describes.

None of the three can be installed here. Each fake answers on 127.0.0.1 the one
request cloudplow makes, the way the real server would (see the facts in
cloudplow/integrations/media_servers.py):

- plex: GET /status/sessions with the X-Plex-Token header -> XML MediaContainer
  of <Video> items, each with <User>, <Player address local state> and
  <Session id bandwidth location>;
- jellyfin: GET /Sessions with `Authorization: MediaBrowser Token="..."` ->
  JSON list of sessions with NowPlayingItem, PlayState.IsPaused, RemoteEndPoint;
- emby: GET /emby/Sessions with X-Emby-Token -> the same JSON.

A wrong or missing token gets 401, any other path 404. Tests set the playing
sessions with `set_sessions()`; `stop()` takes the server down (connection refused).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import quoteattr


@dataclass(frozen=True)
class FakeSession:
    address: str = "203.0.113.7"  # a documentation address: remote
    paused: bool = False
    local: bool = False  # Plex's own LAN flags (Player.local, Session.location)
    playing: bool = True  # Jellyfin/Emby: with a NowPlayingItem


def plex_body(sessions: list[FakeSession]) -> bytes:
    items = []
    for number, session in enumerate(sessions, start=1):
        state = "paused" if session.paused else "playing"
        items.append(
            f'<Video ratingKey="{number}" type="movie" title="Film {number}">'
            f'<User id="{number}" title="viewer{number}"/>'
            f'<Player address={quoteattr(session.address)} local="{1 if session.local else 0}"'
            f' machineIdentifier="player-{number}" product="Plex Web" state="{state}"/>'
            f'<Session id="s{number}" bandwidth="8000" location="{"lan" if session.local else "wan"}"/>'
            "</Video>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<MediaContainer size="{len(sessions)}">{"".join(items)}</MediaContainer>\n'
    ).encode()


def media_browser_body(sessions: list[FakeSession]) -> bytes:
    document = []
    for number, session in enumerate(sessions, start=1):
        entry: dict = {
            "Id": f"session-{number}",
            "UserName": f"viewer{number}",
            "Client": "Jellyfin Web",
            "RemoteEndPoint": session.address,
            "PlayState": {"IsPaused": session.paused, "PositionTicks": 1000},
        }
        if session.playing:
            entry["NowPlayingItem"] = {"Name": f"Film {number}", "Type": "Movie"}
        document.append(entry)
    # A connected client that plays nothing is always there, as on a real server.
    document.append({"Id": "idle", "UserName": "idle", "RemoteEndPoint": "198.51.100.9", "PlayState": {}})
    return json.dumps(document).encode()


class FakeMediaServer:
    """One fake server of a kind, on a free 127.0.0.1 port."""

    def __init__(self, kind: str, token: str = "test-token-123456"):
        self.kind = kind
        self.token = token
        self.sessions: list[FakeSession] = []
        self.requests: list[tuple[str, dict[str, str]]] = []  # (path, headers) of every request
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        self._running = True

    def set_sessions(self, sessions: list[FakeSession]) -> None:
        with self._lock:
            self.sessions = list(sessions)

    def _authorized(self, headers) -> bool:
        if self.kind == "plex":
            return headers.get("X-Plex-Token") == self.token
        if self.kind == "emby":
            return headers.get("X-Emby-Token") == self.token
        match = re.fullmatch(r"MediaBrowser\s+(.*)", headers.get("Authorization", ""))
        return bool(match) and f'Token="{self.token}"' in match.group(1)

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests.append((request.path, dict(request.headers)))
            sessions = list(self.sessions)
        path = request.path.split("?", 1)[0]
        expected = {"plex": "/status/sessions", "jellyfin": "/Sessions", "emby": "/emby/Sessions"}[self.kind]
        if path != expected:
            self._answer(request, 404, b"not found", "text/plain")
        elif not self._authorized(request.headers):
            self._answer(request, 401, b"Unauthorized", "text/plain")
        elif self.kind == "plex":
            self._answer(request, 200, plex_body(sessions), "text/xml;charset=utf-8")
        else:
            self._answer(request, 200, media_browser_body(sessions), "application/json; charset=utf-8")

    @staticmethod
    def _answer(request: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str) -> None:
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def stop(self) -> None:
        if self._running:
            self._running = False
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
