"""A small client for rclone's remote control (RC) API, always on 127.0.0.1 with credentials."""

from __future__ import annotations

import secrets
import socket

import requests

from cloudplow.rclone.command import STATS_GROUP


class RcClient:
    """Calls one rclone process's RC server."""

    def __init__(self, port: int, user: str, password: str, *, timeout_seconds: float = 2.0):
        self.url = f"http://127.0.0.1:{port}/"
        self._session = requests.Session()
        self._session.auth = (user, password)
        self._timeout_seconds = timeout_seconds

    def call(self, method: str, **parameters: object) -> dict:
        """Call an RC method and return its JSON answer. Raise requests.RequestException on failure."""
        response = self._session.post(self.url + method, json=parameters, timeout=self._timeout_seconds)
        response.raise_for_status()
        answer = response.json()
        return answer if isinstance(answer, dict) else {}

    def stats(self) -> dict:
        """Return `core/stats` for the command-line transfers' group (never without a group)."""
        return self.call("core/stats", group=STATS_GROUP)

    def close(self) -> None:
        self._session.close()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def new_credentials() -> tuple[str, str]:
    """Return a random RC user and password for one rclone process."""
    return f"cloudplow-{secrets.token_hex(4)}", secrets.token_urlsafe(24)
