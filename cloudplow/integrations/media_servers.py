"""Counting the people who stream from Plex, Jellyfin or Emby: one narrow interface, `poll() -> streams`.

The throttle (throttle.py) asks each configured server for its playback
sessions every `poll` and slows uploads while people watch. This module only
speaks the servers' HTTP APIs and turns their answers into `Stream`s; what a
count means for the upload rate is the throttle's business.

Facts relied on (looked up in the public documentation and clients; none of
these servers can be installed here, so the tests serve these shapes):

- Plex: `GET /status/sessions` lists what plays now, authenticated by the
  `X-Plex-Token` header (Plex's own convention, and how python-plexapi and
  l3uddz/cloudplow call it); a wrong token gets 401. Without an `Accept:
  application/json` header the answer is XML: a `<MediaContainer size="N">`
  whose children (`<Video>`, `<Track>`, `<Photo>`) each carry a `<Player>` with
  `address`, `local` ("1" on the LAN) and `state` (playing, paused,
  buffering), and a `<Session>` with `location` (lan, wan or cellular).
  Sources: python-plexapi plexapi/media.py (Session: id, bandwidth, location
  "lan, wan, or cellular"), LukeHagar/plexjs docs/sdk/models/shared/player.md
  (Player.local: "playing from the local LAN", Player.address, Player.state).
- Jellyfin: `GET /Sessions` returns a JSON list of SessionInfoDto with
  `NowPlayingItem` (absent when nothing plays), `PlayState.IsPaused` and
  `RemoteEndPoint` (the client's address). API keys go in the
  `Authorization: MediaBrowser Token="<key>"` header; the old `X-Emby-Token`
  header is deprecated and Jellyfin 12 rejects it. Sources:
  typescript-sdk.jellyfin.org SessionInfoDto; the Jellyfin API authorization
  notes (gist nielsvanvelzen/ea047d9028f676185832e51ffaf12a6f); release notes
  of clients fixed for Jellyfin 12 (sahara101/Movie-Roulette v5.5.6).
- Emby: the API lives under `/emby/{apipath}`, so sessions are
  `GET /emby/Sessions`, with the same SessionInfo fields; an API key goes in
  the `X-Emby-Token` header. Sources: dev.emby.media/doc/restapi/index.html
  and API-Key-Authentication.html.

A stream counts when it plays (not paused); with `ignore_local`, not when it
comes from the home network: Plex's `Session.location == "lan"` or
`Player.local == "1"`, or (every kind) an address in LOCAL_NETWORKS
(loopback, RFC 1918, link-local, IPv6 unique-local). The token travels only
in a header, never in a URL, so no log line or error can show it.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import requests

from cloudplow.config.load import MediaServer

# The home network: loopback, RFC 1918, link-local, IPv6 unique-local. Not Python's broader
# is_private, which also holds the documentation and reserved ranges.
LOCAL_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "::1/128",
        "fe80::/10",
        "fc00::/7",
    )
)
TIMEOUT_SECONDS = (3.0, 5.0)  # connect, read: a hung server must not hold the throttle's poller


@dataclass(frozen=True)
class Stream:
    """One playback session as a server reports it."""

    paused: bool
    local: bool  # from loopback, a private network or the LAN, as far as the server tells


class MediaServerError(Exception):
    """The server could not be asked: down, refused the token, or answered nonsense (no secret in it)."""


class MediaServerClient(Protocol):
    name: str

    def poll(self) -> list[Stream]: ...


def count_streams(streams: Iterable[Stream], *, ignore_local: bool) -> int:
    """Given a server's streams, return how many are active: playing, and remote when ignore_local."""
    return sum(1 for stream in streams if not stream.paused and not (ignore_local and stream.local))


def is_local_address(address: str | None) -> bool:
    """
    Given an address as servers report it (`10.0.0.5`, `10.0.0.5:51234`,
    `[::1]:8096`, `::ffff:192.168.1.2`), return whether it is in LOCAL_NETWORKS.
    Anything unreadable is not local: it counts, to be safe.
    """
    if not address:
        return False
    text = address.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]  # IPv4 with a port
    try:
        parsed = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    return any(parsed in network for network in LOCAL_NETWORKS if network.version == parsed.version)


class _HttpClient:
    """What the three kinds share: one requests session, errors turned into MediaServerError."""

    path = ""

    def __init__(self, server: MediaServer, session: requests.Session | None = None):
        self.server = server
        self.name = server.name
        self._session = session or requests.Session()
        self._session.headers.update(self.headers(server.token))

    def headers(self, token: str) -> dict[str, str]:
        raise NotImplementedError

    def url(self) -> str:
        return self.server.url.rstrip("/") + self.path

    def fetch(self) -> requests.Response:
        try:
            response = self._session.get(self.url(), timeout=TIMEOUT_SECONDS)
        except requests.RequestException as error:
            raise MediaServerError(f"unreachable ({type(error).__name__})") from None
        if response.status_code in (401, 403):
            raise MediaServerError(f"refused the token (HTTP {response.status_code})")
        if response.status_code != 200:
            raise MediaServerError(f"answered HTTP {response.status_code}")
        return response

    def poll(self) -> list[Stream]:
        raise NotImplementedError

    def close(self) -> None:
        self._session.close()


class PlexClient(_HttpClient):
    path = "/status/sessions"

    def headers(self, token: str) -> dict[str, str]:
        return {"X-Plex-Token": token, "Accept": "application/xml"}

    def poll(self) -> list[Stream]:
        """Return the server's playback sessions. Raise MediaServerError if it cannot be asked."""
        return parse_plex_sessions(self.fetch().content)


class JellyfinClient(_HttpClient):
    path = "/Sessions"

    def headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f'MediaBrowser Token="{token}"', "Accept": "application/json"}

    def poll(self) -> list[Stream]:
        """Return the server's playback sessions. Raise MediaServerError if it cannot be asked."""
        try:
            document = self.fetch().json()
        except ValueError:
            raise MediaServerError("answered something that is not JSON") from None
        return parse_media_browser_sessions(document)


class EmbyClient(JellyfinClient):
    def headers(self, token: str) -> dict[str, str]:
        return {"X-Emby-Token": token, "Accept": "application/json"}

    def url(self) -> str:
        base = self.server.url.rstrip("/")
        # The API lives under /emby; a URL that already ends there is not doubled.
        return base + ("/Sessions" if base.lower().endswith("/emby") else "/emby/Sessions")


def parse_plex_sessions(body: bytes) -> list[Stream]:
    """Given Plex's /status/sessions XML, return its streams. Raise MediaServerError if it is not that."""
    try:
        container = ElementTree.fromstring(body)  # noqa: S314 -- the configured server's answer, no DTDs
    except ElementTree.ParseError:
        raise MediaServerError("answered something that is not Plex's XML") from None
    if container.tag != "MediaContainer":
        raise MediaServerError(f"answered <{container.tag}>, not a MediaContainer")
    streams = []
    for item in container:
        player = item.find("Player")
        if player is None:
            continue  # not a playback session
        session = item.find("Session")
        location = session.get("location", "") if session is not None else ""
        local = (
            location.lower() == "lan"
            or player.get("local", "") in ("1", "true")
            or is_local_address(player.get("address"))
        )
        streams.append(Stream(paused=player.get("state", "").lower() == "paused", local=local))
    return streams


def parse_media_browser_sessions(document: object) -> list[Stream]:
    """
    Given Jellyfin's or Emby's /Sessions JSON, return the sessions that play
    something. Raise MediaServerError if it is not a list of sessions.
    """
    if not isinstance(document, list):
        raise MediaServerError("answered JSON that is not a list of sessions")
    streams = []
    for session in document:
        if not isinstance(session, dict) or not session.get("NowPlayingItem"):
            continue  # a connected client that plays nothing
        play_state = session.get("PlayState")
        paused = bool(play_state.get("IsPaused")) if isinstance(play_state, dict) else False
        endpoint = session.get("RemoteEndPoint")
        streams.append(
            Stream(paused=paused, local=is_local_address(endpoint if isinstance(endpoint, str) else None))
        )
    return streams


_CLIENTS: dict[str, type[_HttpClient]] = {"plex": PlexClient, "jellyfin": JellyfinClient, "emby": EmbyClient}


def client_for(server: MediaServer) -> _HttpClient:
    """Given a configured server, return the client that speaks its API."""
    return _CLIENTS[server.kind](server)


def clients_for(servers: Sequence[MediaServer]) -> list[_HttpClient]:
    return [client_for(server) for server in servers]
