"""The local quota WebDAV server: Google's limit rules over real HTTP, as real rclone sees them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cloudplow.demo.quotadav import DENIED_MESSAGE, LIMIT_MESSAGE, QuotaDavServer, UserUsage

pytestmark = pytest.mark.integration

RCLONE = Path(sys.executable).parent / "rclone"
ALICE = ("alice", "alice")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "dav"
    root.mkdir()
    return root


@pytest.fixture
def server(root: Path) -> Iterator[QuotaDavServer]:
    with QuotaDavServer(root, {"alice": 1000, "bob": 500}) as server:
        yield server


def put(server: QuotaDavServer, name: str, body: object, auth=ALICE) -> requests.Response:
    return requests.put(server.url + name, data=body, auth=auth, timeout=30)


def wait_until(condition, timeout_seconds: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def test_uploads_complete_until_the_crossing_one_then_are_refused(server, root):
    assert put(server, "a.bin", b"a" * 400).status_code == 201
    assert put(server, "b.bin", b"b" * 400).status_code == 201
    assert server.usage()["alice"].exceeded is False

    # 800 + 300 crosses 1000: this upload still completes.
    assert put(server, "c.bin", b"c" * 300).status_code == 201
    assert server.usage()["alice"].exceeded is True

    refused = put(server, "d.bin", b"d" * 10)
    assert refused.status_code == 403
    assert LIMIT_MESSAGE in refused.text
    assert refused.headers["Content-Type"].startswith("application/xml")
    # An existing file is not clobbered by a refused upload.
    assert put(server, "a.bin", b"x" * 5).status_code == 403

    assert server.usage()["alice"] == UserUsage(
        committed_bytes=1100,
        committed_files=3,
        wasted_bytes=0,
        failed_uploads=0,
        refused_uploads=2,
        exceeded=True,
    )
    assert sorted(path.name for path in root.iterdir()) == ["a.bin", "b.bin", "c.bin"]
    assert (root / "a.bin").read_bytes() == b"a" * 400
    # Other users have their own quota; everything but PUT still works for alice.
    assert server.usage()["bob"] == UserUsage()
    assert put(server, "e.bin", b"e" * 10, auth=("bob", "bob")).status_code == 201
    assert requests.get(server.url + "c.bin", auth=ALICE, timeout=30).content == b"c" * 300
    assert requests.delete(server.url + "c.bin", auth=ALICE, timeout=30).status_code == 204
    assert not (root / "c.bin").exists()


def test_reaching_the_quota_exactly_is_not_exceeding_it(server):
    bob = ("bob", "bob")
    assert put(server, "a.bin", b"a" * 500, auth=bob).status_code == 201
    assert server.usage()["bob"].exceeded is False
    assert put(server, "b.bin", b"b", auth=bob).status_code == 201
    assert server.usage()["bob"].exceeded is True
    assert put(server, "c.bin", b"", auth=bob).status_code == 403


def test_set_quota_lifts_and_imposes_the_limit(server):
    assert put(server, "a.bin", b"a" * 1001).status_code == 201
    assert put(server, "b.bin", b"b").status_code == 403
    server.set_quota("alice", 2000)
    assert server.usage()["alice"].exceeded is False
    assert put(server, "b.bin", b"b").status_code == 201
    server.set_quota("alice", 100)
    assert server.usage()["alice"].exceeded is True
    with pytest.raises(KeyError):
        server.set_quota("carol", 1)


def test_uploads_in_flight_when_the_limit_is_crossed_fail_and_waste_their_bytes(server, root):
    releases = {name: threading.Event() for name in ("first", "second")}
    responses: dict[str, requests.Response] = {}

    def paused_body(name: str, size_bytes: int) -> Iterator[bytes]:
        yield b"x" * (size_bytes // 2)
        releases[name].wait(timeout=10)
        yield b"y" * (size_bytes - size_bytes // 2)

    def upload(name: str, size_bytes: int) -> None:
        responses[name] = put(server, f"{name}.bin", paused_body(name, size_bytes))

    (root / "second.bin").write_bytes(b"old content")
    threads = [
        threading.Thread(target=upload, args=("first", 1200)),
        threading.Thread(target=upload, args=("second", 700)),
    ]
    for thread in threads:
        thread.start()
    # Both uploads have started below the limit.
    wait_until(lambda: server.usage()["alice"].receiving_uploads == 2)

    releases["first"].set()
    threads[0].join(timeout=10)
    assert responses["first"].status_code == 201
    assert server.usage()["alice"].exceeded is True

    releases["second"].set()
    threads[1].join(timeout=10)
    assert responses["second"].status_code == 403
    assert LIMIT_MESSAGE in responses["second"].text

    usage = server.usage()["alice"]
    assert (usage.committed_bytes, usage.committed_files) == (1200, 1)
    assert (usage.wasted_bytes, usage.failed_uploads, usage.refused_uploads) == (700, 1, 0)
    assert usage.receiving_uploads == 0
    assert (root / "first.bin").read_bytes() == b"x" * 600 + b"y" * 600
    # The failed upload left the file that was there untouched.
    assert (root / "second.bin").read_bytes() == b"old content"


def receive(connection: socket.socket) -> bytes:
    data = connection.recv(65536)
    if not data:
        raise ConnectionError("the server closed the connection")
    return data


def read_response(connection: socket.socket) -> bytes:
    received = b""
    while b"\r\n\r\n" not in received:
        received += receive(connection)
    head, body = received.split(b"\r\n\r\n", 1)
    length_lines = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    length = int(length_lines[0].split(b":")[1])
    while len(body) < length:
        body += receive(connection)
    return head


def test_a_refused_chunked_upload_leaves_the_connection_usable(server):
    server.set_quota("alice", -1)
    authorization = b"Authorization: Basic YWxpY2U6YWxpY2U=\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(
            b"PUT /refused.bin HTTP/1.1\r\nHost: localhost\r\n" + authorization
            + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )  # fmt: skip
        assert read_response(connection).startswith(b"HTTP/1.1 403 ")
        # rclone reuses its connections: the next request must not find leftovers.
        connection.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n" + authorization + b"\r\n")
        assert read_response(connection).startswith(b"HTTP/1.1 200 ")
    assert server.usage()["alice"].refused_uploads == 1


def test_an_upload_aborted_by_the_client_is_not_stored(server, root):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(
            b"PUT /aborted.bin HTTP/1.1\r\nHost: localhost\r\n"
            b"Authorization: Basic YWxpY2U6YWxpY2U=\r\nContent-Length: 1000\r\n\r\n" + b"z" * 300
        )
        wait_until(lambda: server.usage()["alice"].receiving_uploads == 1)
    wait_until(lambda: server.usage()["alice"].aborted_uploads == 1)
    usage = server.usage()["alice"]
    assert (usage.aborted_bytes, usage.committed_bytes, usage.wasted_bytes) == (300, 0, 0)
    assert not (root / "aborted.bin").exists()


def test_wrong_or_missing_password_is_refused(server):
    assert requests.get(server.url, auth=("alice", "wrong"), timeout=30).status_code == 401
    assert requests.get(server.url, timeout=30).status_code == 401
    assert requests.get(server.url, auth=ALICE, timeout=30).status_code == 200


def test_refused_users_get_401_or_a_403_that_is_not_the_limit(server):
    server.refuse("alice", 401)
    response = requests.get(server.url, auth=ALICE, timeout=30)
    assert response.status_code == 401 and "Basic" in response.headers["WWW-Authenticate"]
    assert put(server, "a.bin", b"x" * 10).status_code == 401
    server.refuse("alice", 403)
    response = put(server, "a.bin", b"x" * 10)
    assert response.status_code == 403
    assert DENIED_MESSAGE in response.text and LIMIT_MESSAGE not in response.text
    assert server.usage()["alice"].committed_bytes == 0
    server.refuse("alice", None)
    assert put(server, "a.bin", b"x" * 10).status_code in (200, 201, 204)
    assert server.usage()["alice"].committed_bytes == 10
    with pytest.raises(KeyError):
        server.refuse("nobody", 401)
    with pytest.raises(ValueError, match="401 or 403"):
        server.refuse("alice", 500)


def test_custom_passwords(root):
    with QuotaDavServer(root, {"alice": 10}, passwords={"alice": "secret"}) as server:
        assert requests.get(server.url, auth=ALICE, timeout=30).status_code == 401
        assert requests.get(server.url, auth=("alice", "secret"), timeout=30).status_code == 200


def test_stop_closes_the_port(root):
    server = QuotaDavServer(root, {"alice": 10}).start()
    port = server.port
    assert server.url == f"http://127.0.0.1:{port}/"
    assert requests.get(server.url, auth=ALICE, timeout=30).status_code == 200
    server.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    server.stop()  # a second stop is harmless


def write_rclone_config(path: Path, server: QuotaDavServer, user: str) -> Path:
    obscured = subprocess.run(
        [str(RCLONE), "obscure", user], capture_output=True, text=True, check=True
    ).stdout.strip()
    path.write_text(
        "[dav]\ntype = webdav\n"
        f"url = {server.url}\nvendor = other\nuser = {user}\npass = {obscured}\n"
        "pacer_min_sleep = 1ms\n"
    )
    return path


def failed_files_in_plain_log(stderr: str) -> set[str]:
    # ERROR : f03.bin: Failed to copy: ... User rate limit exceeded.: 403 Forbidden
    failed = set()
    for line in stderr.splitlines():
        if "ERROR : " in line and LIMIT_MESSAGE in line and "Failed to copy" in line:
            failed.add(line.split("ERROR : ", 1)[1].split(": ", 1)[0])
    return failed


def failed_files_in_json_log(stderr: str) -> set[str]:
    failed = set()
    for line in stderr.splitlines():
        event = json.loads(line)
        if event["level"] == "error" and "object" in event and LIMIT_MESSAGE in event["msg"]:
            failed.add(event["object"])
    return failed


@pytest.mark.parametrize("json_log", [False, True], ids=["plain-log", "json-log"])
def test_rclone_copy_hits_the_limit(tmp_path, json_log):
    source = tmp_path / "source"
    source.mkdir()
    sizes = {f"f{index:02}.bin": 60_000 + 1_000 * index for index in range(10)}
    for name, size_bytes in sizes.items():
        (source / name).write_bytes(os.urandom(size_bytes))
    root = tmp_path / "dav"
    root.mkdir()

    with QuotaDavServer(root, {"alice": 200_000}) as server:
        config = write_rclone_config(tmp_path / "rclone.conf", server, "alice")
        command = [
            str(RCLONE), "--config", str(config), "copy", str(source), "dav:",
            "--transfers", "4", "--retries", "1", "--low-level-retries", "1",
        ]  # fmt: skip
        if json_log:
            command.append("--use-json-log")
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        usage = server.usage()["alice"]

    assert result.returncode == 1, result.stderr
    present = {path.name for path in root.iterdir()}
    missing = set(sizes) - present
    assert present and missing
    for name in present:
        assert (root / name).read_bytes() == (source / name).read_bytes()
    assert usage.exceeded
    assert usage.committed_bytes == sum(sizes[name] for name in present)
    assert usage.committed_files == len(present)
    assert usage.committed_bytes > 200_000
    assert usage.committed_bytes - max(sizes[name] for name in present) <= 200_000
    parse = failed_files_in_json_log if json_log else failed_files_in_plain_log
    assert parse(result.stderr) == missing
