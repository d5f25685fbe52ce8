"""The real SABnzbd, NZBGet and qBittorrent daemons (Debian packages) for the tests.

Each starts on a free 127.0.0.1 port with a throwaway configuration and known
credentials in its own folder, answers through its own API, and is stopped
by its pid. `make downloaders` installs them.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import requests

from tests.conftest import free_port, stop_process

SABNZBD = shutil.which("sabnzbdplus") or "/usr/bin/sabnzbdplus"
NZBGET = shutil.which("nzbget") or "/usr/bin/nzbget"
QBITTORRENT = shutil.which("qbittorrent-nox") or "/usr/bin/qbittorrent-nox"

API_KEY = "0123456789abcdef0123456789abcdef"  # a test SABnzbd's key: 32 hex digits like its own
USERNAME = "cloudplow"
PASSWORD = "pa55-w0rd-for-tests"  # the tests check it never shows in output or state


class DaemonProcess:
    """One daemon subprocess, its log in its folder."""

    name = "daemon"

    def __init__(self, directory: Path):
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / "daemon.log"
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 60) -> DaemonProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"{self.name} exited {self.process.returncode}:\n{self.log()}"
            try:
                if self.ready():
                    return self
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"{self.name} not ready after {timeout:.0f} s:\n{self.log()}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=20)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Sabnzbd(DaemonProcess):
    name = "sabnzbd"

    def command(self) -> list[str]:
        ini = self.directory / "sabnzbd.ini"
        if not ini.exists():
            ini.write_text(
                "[misc]\n"
                f"api_key = {API_KEY}\n"
                f"nzb_key = {API_KEY[::-1]}\n"
                f"host = 127.0.0.1\nport = {self.port}\n"
                f"download_dir = {self.directory / 'incomplete'}\n"
                f"complete_dir = {self.directory / 'complete'}\n"
                "check_new_rel = 0\nauto_browser = 0\n",
                encoding="utf-8",
            )
        return [
            SABNZBD,
            "--config-file",
            str(ini),
            "--server",
            f"127.0.0.1:{self.port}",
            "--browser",
            "0",
            "--new",
            "--disable-file-log",
        ]

    def api(self, mode: str) -> dict:
        response = requests.get(
            f"{self.url}/api", params={"mode": mode, "output": "json", "apikey": API_KEY}, timeout=10
        )
        response.raise_for_status()
        return response.json()

    def ready(self) -> bool:
        return "paused" in self.api("queue")["queue"]

    def is_paused(self) -> bool:
        return bool(self.api("queue")["queue"]["paused"])

    def pause(self) -> None:
        assert self.api("pause")["status"] is True

    def resume(self) -> None:
        assert self.api("resume")["status"] is True

    def config(self) -> dict:
        return {"kind": "sabnzbd", "url": self.url, "api_key": API_KEY}


class Nzbget(DaemonProcess):
    name = "nzbget"

    def command(self) -> list[str]:
        main = self.directory / "main"
        main.mkdir(exist_ok=True)
        conf = self.directory / "nzbget.conf"
        conf.write_text(
            f"MainDir={main}\n"
            "WebDir=/usr/share/nzbget/webui\n"
            "ConfigTemplate=/usr/share/nzbget/webui/nzbget.conf\n"
            f"LockFile={main}/nzbget.lock\nLogFile={main}/nzbget.log\n"
            f"ControlIP=127.0.0.1\nControlPort={self.port}\n"
            f"ControlUsername={USERNAME}\nControlPassword={PASSWORD}\n"
            "OutputMode=log\nUpdateCheck=none\n",
            encoding="utf-8",
        )
        return [NZBGET, "--configfile", str(conf), "--server"]

    def rpc(self, method: str) -> object:
        response = requests.post(
            f"{self.url}/jsonrpc",
            json={"method": method, "params": [], "id": 1},
            auth=(USERNAME, PASSWORD),
            timeout=10,
        )
        response.raise_for_status()
        return response.json()["result"]

    def ready(self) -> bool:
        return "DownloadPaused" in self.rpc("status")  # type: ignore[operator]

    def is_paused(self) -> bool:
        return bool(self.rpc("status")["DownloadPaused"])  # type: ignore[index]

    def pause(self) -> None:
        assert self.rpc("pausedownload") is True

    def resume(self) -> None:
        assert self.rpc("resumedownload") is True

    def config(self) -> dict:
        return {"kind": "nzbget", "url": self.url, "username": USERNAME, "password": PASSWORD}


def _bencode(value: object) -> bytes:
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(_bencode(item) for item in value) + b"e"
    if isinstance(value, dict):
        return b"d" + b"".join(_bencode(key) + _bencode(value[key]) for key in sorted(value)) + b"e"
    raise TypeError(type(value))


class Qbittorrent(DaemonProcess):
    """qbittorrent-nox with two local torrents: `running` seeds, `user-paused` the user paused."""

    name = "qbittorrent"

    def command(self) -> list[str]:
        config_dir = self.directory / "qBittorrent" / "config"
        config_dir.mkdir(parents=True, exist_ok=True)
        salt = os.urandom(16)
        key = hashlib.pbkdf2_hmac("sha512", PASSWORD.encode(), salt, 100_000, 64)
        password = f"@ByteArray({base64.b64encode(salt).decode()}:{base64.b64encode(key).decode()})"
        (config_dir / "qBittorrent.conf").write_text(
            "[LegalNotice]\nAccepted=true\n\n"
            "[BitTorrent]\n"
            "Session\\DHTEnabled=false\nSession\\LSDEnabled=false\nSession\\PeXEnabled=false\n"
            f"Session\\Port={free_port()}\nSession\\Interface=lo\nSession\\InterfaceName=lo\n"
            f"Session\\DefaultSavePath={self.directory / 'save'}\n\n"
            "[Preferences]\n"
            f"WebUI\\Address=127.0.0.1\nWebUI\\Port={self.port}\n"
            f'WebUI\\Username={USERNAME}\nWebUI\\Password_PBKDF2="{password}"\n'
            "WebUI\\LocalHostAuth=true\nConnection\\UPnP=false\n",
            encoding="utf-8",
        )
        return [QBITTORRENT, f"--profile={self.directory}"]

    def session(self) -> requests.Session:
        session = requests.Session()
        response = session.post(
            f"{self.url}/api/v2/auth/login", data={"username": USERNAME, "password": PASSWORD}, timeout=10
        )
        assert response.text == "Ok.", response.text
        return session

    def ready(self) -> bool:
        return requests.get(f"{self.url}/api/v2/app/webapiVersion", timeout=5).status_code in (200, 403)

    def start(self, timeout: float = 60) -> Qbittorrent:
        super().start(timeout)
        self.hashes = {name: self.add_torrent(name, paused=name == "user-paused") for name in TORRENTS}
        return self

    def add_torrent(self, name: str, *, paused: bool) -> str:
        """Add a torrent of a local file we made (it seeds: no tracker, no peer); return its hash."""
        save = self.directory / "save"
        save.mkdir(exist_ok=True)
        data = hashlib.sha256(name.encode()).digest() * 1000
        (save / name).write_bytes(data)
        piece = 16384
        info = {
            "name": name,
            "length": len(data),
            "piece length": piece,
            "pieces": b"".join(
                hashlib.sha1(data[start : start + piece]).digest() for start in range(0, len(data), piece)
            ),
        }
        response = self.session().post(
            f"{self.url}/api/v2/torrents/add",
            files={"torrents": (f"{name}.torrent", _bencode({"info": info}), "application/x-bittorrent")},
            data={"savepath": str(save), "paused": "true" if paused else "false"},
            timeout=10,
        )
        assert response.text == "Ok.", response.text
        return hashlib.sha1(_bencode(info)).hexdigest()

    def states(self) -> dict[str, str]:
        """Return each torrent's state by name (pausedUP, stalledUP, checkingUP, ...)."""
        torrents = self.session().get(f"{self.url}/api/v2/torrents/info", timeout=10).json()
        return {torrent["name"]: torrent["state"] for torrent in torrents}

    def paused(self) -> dict[str, bool]:
        return {name: state.startswith(("paused", "stopped")) for name, state in self.states().items()}

    def set_paused(self, name: str, paused: bool) -> None:
        action = "pause" if paused else "resume"
        self.session().post(
            f"{self.url}/api/v2/torrents/{action}", data={"hashes": self.hashes[name]}, timeout=10
        ).raise_for_status()

    def config(self) -> dict:
        return {"kind": "qbittorrent", "url": self.url, "username": USERNAME, "password": PASSWORD}


TORRENTS = ("running", "user-paused")


def wait_for(condition, *, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
