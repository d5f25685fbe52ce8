"""The integrations wired into the real daemon: a local Plex and a notification sink beside an upload."""

from __future__ import annotations

import yaml

from tests.conftest import free_port, make_source, metric, run_cli, write_config
from tests.fake_media import FakeSession
from tests.test_notifications import Sink


def test_the_daemon_counts_streams_shows_the_throttle_and_notifies(
    tmp_path, quota_server, media_server, start_daemon
):
    sink = Sink()
    try:
        plex = media_server("plex", token="plex-secret-token-1")
        plex.set_sessions(
            [FakeSession("203.0.113.7"), FakeSession("203.0.113.8"), FakeSession("192.168.1.2")]
        )
        server = quota_server({"alice": 10**7})
        source = tmp_path / "source"
        make_source(source, [100_000, 200_000])
        port = free_port()
        extra = {"check": {"interval": "1h", "min_queue": 0}}
        config = write_config(
            tmp_path, server, users=["alice"], quota_bytes=10**7, source=source, extra=extra, server_port=port
        )
        document = yaml.safe_load(config.read_text(encoding="utf-8"))
        document["media_servers"] = [
            {
                "kind": "plex",
                "url": plex.url,
                "token": plex.token,
                "poll": "200ms",
                "throttle": {1: "50M", 3: "20M"},
            }
        ]
        document["notifications"] = {"urls": [sink.url]}
        config.write_text(yaml.safe_dump(document), encoding="utf-8")

        daemon = start_daemon(config, port)
        (body,) = sink.wait_for(1)
        assert body["title"] == "cloudplow: media: session finished"
        assert "uploaded 2 files, 300.00 kB" in body["message"]

        status = daemon.status()
        throttle = status["throttle"]
        (shown,) = throttle["servers"]
        assert shown["kind"] == "plex" and shown["streams"] == 2 and shown["state"] == "ok"
        assert throttle["rate_bytes"] == 50 * 2**20 and throttle["uploaders"] == {"media": 50 * 2**20}
        assert plex.token not in daemon.get("/status").text and plex.token not in daemon.get("/metrics").text
        samples = daemon.metrics()
        assert metric(samples, "cloudplow_media_streams", server=shown["name"]) == 2
        assert metric(samples, "cloudplow_media_server_up", server=shown["name"]) == 1
        assert metric(samples, "cloudplow_throttle_rate_bytes", uploader="media") == 50 * 2**20
        assert metric(samples, "cloudplow_notifications_sent_total") == 1
        assert metric(samples, "cloudplow_notifications_failed_total") == 0

        shown_status = run_cli(config, "status")
        assert shown_status.returncode == 0, shown_status.stderr
        assert (
            f"throttle: 2 active stream(s), uploads 52.43 MB/s; {shown['name']} 2 (ok)" in shown_status.stdout
        )

        plex.stop()  # the server goes down: after three failed polls its streams no longer count

        def lifted():
            samples = daemon.metrics()
            return (
                metric(samples, "cloudplow_media_server_up", server=shown["name"]) == 0
                and metric(samples, "cloudplow_media_streams", server=shown["name"]) == 0
                and metric(samples, "cloudplow_throttle_rate_bytes", uploader="media") == 0
            )

        daemon.wait_until(lifted, timeout=20, what="the throttle to be lifted")
        assert daemon.status()["throttle"]["servers"][0]["state"] == "lifted"
        assert daemon.log().count("unreachable (ConnectionError)") == 2  # the warning, then "still ..."
        assert plex.token not in daemon.log()
    finally:
        sink.stop()
