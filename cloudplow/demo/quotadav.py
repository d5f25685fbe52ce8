"""A local WebDAV server with a per-user upload quota that fails the way Google Drive does.

The integration tests and the `make run` demo upload through real rclone to
this server instead of Google Drive. Each user (one per account in the pool)
may upload `quota` bytes; what happens at the limit follows Google's rules
(see "Facts about the provider" in DESIGN.md):

- uploads that start below the limit are received;
- the first upload that completes past the limit is kept, and the limit is
  then exceeded;
- uploads still in flight at that moment fail with 403 when their body is
  complete, their bytes wasted, nothing stored;
- uploads that start after that are refused at once with 403.

Every quota 403 carries "User rate limit exceeded." in a Sabre-style XML error
body, which rclone's webdav backend prints as
`... User rate limit exceeded.: 403 Forbidden`.

All users share one folder, like service accounts on one shared drive. Only
PUT is counted; every other WebDAV method works normally for everyone.

A test can also refuse a user's credentials the ways a provider does when a
key is revoked or an account is disabled: `refuse(user, 401)` answers every
request of that user with 401 Unauthorized, `refuse(user, 403)` with a 403
whose message is not the limit's ("Access denied: account disabled."), and
`refuse(user, None)` accepts the user again.

wsgidav and cheroot are optional dependencies (`pip install cloudplow[demo]`),
imported when a server is built.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

LIMIT_MESSAGE = "User rate limit exceeded."

# Sabre/Nextcloud error format: rclone's webdav backend decodes it and prints
# `<message>: <exception>: <status>`, skipping empty parts. No exception, so
# the line reads `... User rate limit exceeded.: 403 Forbidden`.
_LIMIT_BODY = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<d:error xmlns:d="DAV:" xmlns:s="http://sabredav.org/ns">'
    f"<s:message>{LIMIT_MESSAGE}</s:message>"
    "</d:error>\n"
).encode()

_READ_BLOCK_BYTES = 256 * 1024

DENIED_MESSAGE = "Access denied: account disabled."
_DENIED_BODY = _LIMIT_BODY.replace(LIMIT_MESSAGE.encode(), DENIED_MESSAGE.encode())


@dataclasses.dataclass
class UserUsage:
    """What one user has uploaded, as the server counted it."""

    committed_bytes: int = 0  # uploads that completed (counted against the quota)
    committed_files: int = 0
    wasted_bytes: int = 0  # received for uploads that then failed with 403
    failed_uploads: int = 0  # failed with 403 after their body was received
    refused_uploads: int = 0  # refused at once: the limit was already exceeded
    exceeded: bool = False  # the limit has been crossed
    aborted_uploads: int = 0  # the client went away before sending the whole body
    aborted_bytes: int = 0  # received for aborted uploads (not counted against the quota)
    receiving_uploads: int = 0  # accepted uploads whose body is being received right now


class _Ledger:
    """Quotas and counters of all users, behind one lock."""

    def __init__(self, quotas: dict[str, int]):
        self.lock = threading.Lock()
        self.quotas = dict(quotas)
        self.usage = {user: UserUsage() for user in quotas}
        # Holds a user's completed uploads back one at a time, so that "the
        # first upload that crosses the limit" is well defined when several
        # finish together.
        self.commit_locks = {user: threading.Lock() for user in quotas}
        self.refused: dict[str, int] = {}  # user -> the status every request of theirs gets


def _refused_response(status: int, start_response: Callable[..., Any]) -> list[bytes]:
    """Given 401 or 403, send the refusal of a user's credentials and return its body."""
    if status == 401:
        start_response(
            "401 Unauthorized",
            [("WWW-Authenticate", 'Basic realm="/"'), ("Content-Length", "0")],
        )
        return []
    start_response(
        "403 Forbidden",
        [("Content-Type", "application/xml; charset=utf-8"), ("Content-Length", str(len(_DENIED_BODY)))],
    )
    return [_DENIED_BODY]


def _limit_response(start_response: Callable[..., Any]) -> list[bytes]:
    """Given a WSGI start_response, send the quota 403 and return its body."""
    start_response(
        "403 Forbidden",
        [
            ("Content-Type", "application/xml; charset=utf-8"),
            ("Content-Length", str(len(_LIMIT_BODY))),
        ],
    )
    return [_LIMIT_BODY]


def _receive_body(environ: dict[str, Any], spool: BinaryIO) -> tuple[int, bool]:
    """
    Given a WSGI environ and a file to spool into, copy the request body into
    the file and return (bytes received, whether the body was complete).

    A body is incomplete when the client sent fewer bytes than its
    Content-Length or the connection failed.
    """
    expected_bytes = None
    if environ.get("CONTENT_LENGTH"):
        expected_bytes = int(environ["CONTENT_LENGTH"])
    body = environ["wsgi.input"]
    received_bytes = 0
    try:
        while expected_bytes is None or received_bytes < expected_bytes:
            block_bytes = _READ_BLOCK_BYTES
            if expected_bytes is not None:
                block_bytes = min(block_bytes, expected_bytes - received_bytes)
            block = body.read(block_bytes)
            if not block:
                break
            spool.write(block)
            received_bytes += len(block)
    except (OSError, ValueError):
        # cheroot raises these when the client disconnects or sends a broken
        # chunked body.
        return received_bytes, False
    return received_bytes, expected_bytes is None or received_bytes == expected_bytes


def _discard_body(environ: dict[str, Any]) -> None:
    """
    Given a WSGI environ, read and drop the rest of the request body.

    A client that is still sending may miss a response sent before its body
    was read, and cheroot would keep the connection with an unread chunked
    body in it.
    """
    body = environ["wsgi.input"]
    with contextlib.suppress(OSError, ValueError):
        while body.read(_READ_BLOCK_BYTES):
            pass
    # So wsgidav does not try to drain it again and log a warning.
    environ["wsgidav.all_input_read"] = 1


class _QuotaMiddleware:
    """
    WSGI middleware placed after wsgidav's authenticator: it applies the quota
    to PUT requests and passes everything else through.

    The body of an accepted PUT is spooled to a private temporary file first;
    only when it is complete, and the quota still allows it, does wsgidav write
    it to the destination. So failed or refused uploads never touch the shared
    folder (no partial file, no clobbered existing file).
    """

    def __init__(self, next_app: Callable[..., Any], ledger: _Ledger, spool_dir: Path | None):
        self.next_app = next_app
        self.ledger = ledger
        self.spool_dir = spool_dir

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        user = environ.get("wsgidav.auth.user_name")
        with self.ledger.lock:
            refused_status = self.ledger.refused.get(user) if user else None
        if refused_status is not None:
            _discard_body(environ)
            return _refused_response(refused_status, start_response)
        if environ["REQUEST_METHOD"] != "PUT" or user not in self.ledger.usage:
            return self.next_app(environ, start_response)
        usage = self.ledger.usage[user]
        with self.ledger.lock:
            refuse = usage.exceeded
            if refuse:
                usage.refused_uploads += 1
            else:
                usage.receiving_uploads += 1
        if refuse:
            _discard_body(environ)
            return _limit_response(start_response)

        with tempfile.TemporaryFile(dir=self.spool_dir) as spool:
            try:
                received_bytes, complete = _receive_body(environ, spool)
            finally:
                with self.ledger.lock:
                    usage.receiving_uploads -= 1
            if not complete:
                with self.ledger.lock:
                    usage.aborted_uploads += 1
                    usage.aborted_bytes += received_bytes
                environ["wsgidav.all_input_read"] = 1
                start_response("400 Bad Request", [("Content-Length", "0"), ("Connection", "close")])
                return []
            spool.seek(0)
            with self.ledger.commit_locks[user]:
                with self.ledger.lock:
                    fail = usage.exceeded
                    if fail:
                        usage.failed_uploads += 1
                        usage.wasted_bytes += received_bytes
                if fail:
                    environ["wsgidav.all_input_read"] = 1
                    return _limit_response(start_response)
                return self._store(environ, start_response, spool, user, received_bytes)

    def _store(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        spool: BinaryIO,
        user: str,
        size_bytes: int,
    ) -> list[bytes]:
        """
        Given a PUT whose complete body is in spool, let wsgidav store it, count
        it against the user's quota if wsgidav succeeded, and return the
        response body.
        """
        environ["wsgi.input"] = spool
        environ["CONTENT_LENGTH"] = str(size_bytes)
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        status_holder: list[str] = []

        def remember_status(status: str, headers: list[Any], exc_info: Any = None) -> Any:
            status_holder.append(status)
            return start_response(status, headers, exc_info)

        # Consume the response while the commit lock is held: wsgidav may do
        # its work lazily inside the iterator.
        response: Iterable[bytes] = self.next_app(environ, remember_status)
        try:
            body = list(response)
        finally:
            close = getattr(response, "close", None)
            if close is not None:
                close()
        if status_holder and status_holder[-1].startswith("2"):
            usage = self.ledger.usage[user]
            with self.ledger.lock:
                usage.committed_bytes += size_bytes
                usage.committed_files += 1
                if usage.committed_bytes > self.ledger.quotas[user]:
                    usage.exceeded = True
        return body


class QuotaDavServer:
    """
    A WebDAV server on `host:port` (port 0: any free port) serving `root` to
    the users in `quotas`, each limited to its number of bytes of uploads.
    Passwords default to the user name. Upload bodies are spooled in
    `spool_dir` (default: the system's temporary folder) until they are
    decided. Raise ValueError if `passwords` names a user without a quota.

    Use as a context manager, or call start() and stop().
    """

    def __init__(
        self,
        root: Path,
        quotas: dict[str, int],
        *,
        passwords: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        spool_dir: Path | None = None,
    ):
        self.root = Path(root)
        self.passwords = {user: user for user in quotas}
        self.passwords.update(passwords or {})
        unknown_users = sorted(set(self.passwords) - set(quotas))
        if unknown_users:
            raise ValueError(f"passwords given for users without a quota: {unknown_users}")
        self.host = host
        self.port = port
        self.url = ""
        self._ledger = _Ledger(quotas)
        self._spool_dir = spool_dir
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def _build_app(self) -> Any:
        """Return the wsgidav application: basic auth, quota, the shared folder."""
        from wsgidav.dir_browser import WsgiDavDirBrowser
        from wsgidav.error_printer import ErrorPrinter
        from wsgidav.fs_dav_provider import FilesystemProvider
        from wsgidav.http_authenticator import HTTPAuthenticator
        from wsgidav.request_resolver import RequestResolver
        from wsgidav.wsgidav_app import WsgiDAVApp

        user_mapping = {
            user: {"password": password, "description": "", "roles": []}
            for user, password in self.passwords.items()
        }
        config = {
            "provider_mapping": {
                "/": FilesystemProvider(str(self.root), fs_opts={}),
            },
            "simple_dc": {"user_mapping": {"*": user_mapping}},
            "http_authenticator": {
                "domain_controller": None,  # SimpleDomainController over user_mapping
                "accept_basic": True,
                "accept_digest": False,
                "default_to_digest": False,
            },
            "middleware_stack": [
                ErrorPrinter,
                HTTPAuthenticator,
                {
                    # wsgidav imports the class by name to hand it the next app.
                    "class": f"{__name__}._QuotaMiddleware",
                    "kwargs": {
                        "next_app": "${application}",
                        "ledger": self._ledger,
                        "spool_dir": self._spool_dir,
                    },
                },
                WsgiDavDirBrowser,
                RequestResolver,
            ],
            "dir_browser": {"enable": True},
            "lock_storage": True,
            "property_manager": True,
            "verbose": 1,
            # wsgidav would otherwise configure logging handlers of its own.
            "logging": {"enable": False},
        }
        return WsgiDAVApp(config)

    def start(self) -> QuotaDavServer:
        """Start serving in a daemon thread and return self once the port accepts connections."""
        from cheroot import wsgi

        if self._server is not None:
            raise RuntimeError("server already started")
        logging.getLogger("wsgidav").setLevel(logging.WARNING)
        server = wsgi.Server((self.host, self.port), self._build_app(), numthreads=32)
        # A worker still receiving an upload would otherwise hold stop() for 5 s.
        server.shutdown_timeout = 1
        server.prepare()  # binds and listens: connections queue from here on
        self.port = server.bind_addr[1]
        self.url = f"http://{self.host}:{self.port}/"
        self._server = server
        self._thread = threading.Thread(target=server.serve, name="quotadav", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wait for the server thread and free the port."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> QuotaDavServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def usage(self) -> dict[str, UserUsage]:
        """Return a consistent copy of every user's counters."""
        with self._ledger.lock:
            return {user: dataclasses.replace(usage) for user, usage in self._ledger.usage.items()}

    def set_quota(self, user: str, quota_bytes: int) -> None:
        """
        Given a user and a new limit in bytes, apply it from now on: the user is
        exceeded exactly when its committed bytes are above the new limit (so
        raising the limit lifts a block, as a new quota window would). Raise
        KeyError if the user is unknown.
        """
        with self._ledger.lock:
            usage = self._ledger.usage[user]
            self._ledger.quotas[user] = quota_bytes
            usage.exceeded = usage.committed_bytes > quota_bytes

    def refuse(self, user: str, status: int | None) -> None:
        """
        Given a user and 401 or 403, refuse every request of that user from now
        on with that status (403 with a message that is not the limit's); with
        None, accept the user again. Raise KeyError if the user is unknown and
        ValueError for another status.
        """
        if user not in self._ledger.usage:
            raise KeyError(user)
        if status not in (401, 403, None):
            raise ValueError(f"refuse with 401 or 403, not {status}")
        with self._ledger.lock:
            if status is None:
                self._ledger.refused.pop(user, None)
            else:
                self._ledger.refused[user] = status
