"""The media-server clients against local servers speaking Plex's, Jellyfin's and Emby's session APIs."""

from __future__ import annotations

import pytest

from cloudplow.config.load import MediaServer
from cloudplow.integrations.media_servers import (
    MediaServerError,
    Stream,
    client_for,
    count_streams,
    is_local_address,
    parse_media_browser_sessions,
    parse_plex_sessions,
)
from tests.fake_media import FakeSession

KINDS = ("plex", "jellyfin", "emby")
REMOTE, OTHER_REMOTE, HOME = "203.0.113.7", "198.51.100.20", "192.168.1.20"


def configured(fake, *, token=None, ignore_local=True, url=None) -> MediaServer:
    return MediaServer(
        kind=fake.kind,
        url=url or fake.url,
        token=fake.token if token is None else token,
        poll_seconds=1.0,
        ignore_local=ignore_local,
        throttle=((1, 1000),),
    )


@pytest.mark.parametrize("kind", KINDS)
def test_active_remote_streams_are_counted_paused_and_local_ones_are_not(media_server, kind):
    fake = media_server(kind)
    fake.set_sessions(
        [
            FakeSession(REMOTE),
            FakeSession(OTHER_REMOTE),
            FakeSession(REMOTE, paused=True),
            FakeSession(HOME),
            FakeSession("127.0.0.1"),
        ]
    )
    client = client_for(configured(fake))
    streams = client.poll()
    assert len(streams) == 5  # Jellyfin's and Emby's idle client (no NowPlayingItem) is left out
    assert count_streams(streams, ignore_local=True) == 2
    assert count_streams(streams, ignore_local=False) == 4
    client.close()


@pytest.mark.parametrize("kind", KINDS)
def test_the_token_travels_in_the_documented_header_never_in_the_url(media_server, kind):
    fake = media_server(kind)
    client_for(configured(fake)).poll()
    ((path, headers),) = fake.requests
    assert fake.token not in path
    expected = {
        "plex": ("X-Plex-Token", fake.token),
        "jellyfin": ("Authorization", f'MediaBrowser Token="{fake.token}"'),
        "emby": ("X-Emby-Token", fake.token),
    }[kind]
    assert headers[expected[0]] == expected[1]


@pytest.mark.parametrize("kind", KINDS)
def test_a_wrong_token_is_refused_and_the_error_does_not_show_it(media_server, kind):
    fake = media_server(kind)
    with pytest.raises(MediaServerError) as raised:
        client_for(configured(fake, token="wrong-token-987")).poll()
    assert str(raised.value) == "refused the token (HTTP 401)"
    assert "wrong-token-987" not in repr(raised.value)


@pytest.mark.parametrize("kind", KINDS)
def test_a_server_that_is_down_is_an_error_not_zero_streams(media_server, kind):
    fake = media_server(kind)
    fake.stop()
    with pytest.raises(MediaServerError, match="unreachable"):
        client_for(configured(fake)).poll()


def test_plex_lan_flags_count_as_local_even_from_a_public_address(media_server):
    fake = media_server("plex")
    fake.set_sessions([FakeSession(REMOTE, local=True), FakeSession(REMOTE)])
    streams = client_for(configured(fake)).poll()
    assert streams == [Stream(paused=False, local=True), Stream(paused=False, local=False)]


def test_plex_items_without_a_player_and_non_plex_answers():
    body = (
        b'<MediaContainer size="2"><Video title="x"><Player address="203.0.113.7" state="buffering"/>'
        b"</Video><Directory title="
        b'"not a session"/></MediaContainer>'
    )
    assert parse_plex_sessions(body) == [Stream(paused=False, local=False)]  # buffering counts
    with pytest.raises(MediaServerError, match="not Plex's XML"):
        parse_plex_sessions(b"<html")
    with pytest.raises(MediaServerError, match="not a MediaContainer"):
        parse_plex_sessions(b"<html></html>")


def test_jellyfin_answers_that_are_not_session_lists():
    with pytest.raises(MediaServerError, match="not a list"):
        parse_media_browser_sessions({"Items": []})
    sessions = [
        {"NowPlayingItem": {"Name": "a"}, "RemoteEndPoint": "[::1]:8096"},  # no PlayState: playing
        {"NowPlayingItem": None, "RemoteEndPoint": REMOTE},
        "garbage",
    ]
    assert parse_media_browser_sessions(sessions) == [Stream(paused=False, local=True)]


def test_emby_url_already_ending_in_emby_is_not_doubled(media_server):
    fake = media_server("emby")
    fake.set_sessions([FakeSession(REMOTE)])
    assert len(client_for(configured(fake, url=fake.url + "/emby/")).poll()) == 1
    assert fake.requests[-1][0] == "/emby/Sessions"


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("172.16.0.9:51234", True),
        ("192.168.1.20", True),
        ("169.254.3.4", True),
        ("::1", True),
        ("[fe80::1]:8096", True),
        ("fd12:3456::1", True),
        ("::ffff:192.168.0.7", True),
        ("203.0.113.7", False),
        ("8.8.8.8:443", False),
        ("2001:4860::8888", False),
        ("", False),
        (None, False),
        ("not an address", False),
    ],
)
def test_local_addresses(address, local):
    assert is_local_address(address) is local
