"""The status document: served by the daemon at /status, or built from the state dir by the CLI."""

from __future__ import annotations

from collections.abc import Mapping

from cloudplow import __version__, events
from cloudplow.config import Config
from cloudplow.ledger import Ledger
from cloudplow.live import LiveState
from cloudplow.quota import account_reports


def status_document(
    config: Config,
    ledger: Ledger,
    live: LiveState,
    *,
    now: float,
    source: str,
    rclone_version: str | None = None,
    integrations: Mapping[str, object] | None = None,
) -> dict:
    """
    Given the configuration, the ledger and the live state, return the JSON-able
    status: per uploader its state, queue, running session with its active
    transfers, accounts and checks, and what `integrations` report (the
    media-server throttle). No secret (account environment) is in it.
    """
    snapshot = live.snapshot()
    broken = ledger.broken_accounts()
    document: dict = {
        "version": __version__,
        "rclone_version": rclone_version,
        "source": source,
        "state_dir": str(config.state_dir),
        "time": now,
        "uploaders": {},
        **(integrations or {}),
    }
    for uploader in config.pools():
        state = snapshot.get(uploader.name)
        reports = account_reports(
            ledger,
            [account.name for account in uploader.accounts],
            configured_quota_bytes=uploader.quota.per_account_bytes,
            window_seconds=uploader.quota.window_seconds,
            now=now,
        )
        sessions = ledger.sessions(uploader.name, limit=5)
        files_left = ledger.last_files_left(uploader.name)
        session = None
        if state is not None and state.session_id is not None:
            stats = state.stats or {}
            session = {
                "id": state.session_id,
                "started_at": state.session_started_at,
                "stage": state.stage_number,
                "account": state.stage_account,
                "account_index": state.stage_account_index,
                "accounts": state.accounts_in_pool,
                "overshoot": state.stage_overshoot,
                "planned_bytes": state.stage_planned_bytes,
                "planned_files": state.stage_planned_files,
                "transfers": state.stage_transfers,
                "uploaded_bytes": state.session_uploaded_bytes,
                "uploaded_files": state.session_uploaded_files,
                "stage_bytes": stats.get("bytes", 0),
                "speed": stats.get("speed", 0),
                "eta": stats.get("eta"),
                "active_transfers": [
                    {
                        "name": transfer.get("name"),
                        "size": transfer.get("size", 0),
                        "bytes": transfer.get("bytes", 0),
                        "speed": transfer.get("speed", 0),
                    }
                    for transfer in stats.get("transferring") or ()
                ],
            }
        elif sessions and sessions[0]["state"] == "running":
            session = {
                "id": sessions[0]["id"],
                "started_at": sessions[0]["started_at"],
                "note": "running in another process",
            }
        document["uploaders"][uploader.name] = {
            "state": state.state if state else ("uploading" if session else "idle"),
            "kind": uploader.kind,
            "source": uploader.remote_source or str(uploader.source),
            "destination": uploader.destination,
            "mode": uploader.mode,
            "queue": {
                "files": state.queue_files if state else None,
                "bytes": state.queue_bytes if state else None,
            },
            "session": session,
            "accounts": [
                {
                    "name": report.name,
                    "used_bytes": report.used_bytes,
                    "remaining_bytes": report.remaining_bytes,
                    "quota_bytes": report.quota_bytes,
                    "blocked_until": report.blocked_until,
                    "block_reason": report.block_reason,
                    "frees_at": report.frees_at,
                    "broken": report.name in broken,
                    "broken_since": broken[report.name][0] if report.name in broken else None,
                    "broken_message": broken[report.name][1] if report.name in broken else None,
                }
                for report in reports
            ],
            # reason -> files the last finished session left (every reason, 0 when none)
            "files_left": {reason: files_left.get(reason, 0) for reason in events.FILES_LEFT_REASONS},
            "last_check": state.last_check_at if state else None,
            "last_decision": state.last_trigger or None if state else None,
            "next_check": state.next_check_at if state else None,
            "recent_sessions": sessions,
        }
    held = live.downloaders()
    document["downloaders"] = [
        {"name": downloader.name, "kind": downloader.kind, "paused": bool(held.get(downloader.name))}
        for downloader in config.downloaders
    ]
    return document
