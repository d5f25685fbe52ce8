"""The ledger: everything cloudplow must remember, in one SQLite file under state_dir.

It answers the planner's one question, "how many bytes may each account still
upload now?", from the files it recorded as uploaded within the rolling window
and the limits the provider really enforced (blocks). It also keeps sessions
and stages for `status` and, later, the metrics.

Usage is keyed by account name, not by uploader: two uploaders sharing an
account pool share its quota. Every write is one transaction; the database is
in WAL mode so `status` and `quota` can read while a session writes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    uploader TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    state TEXT NOT NULL,              -- running | finished | interrupted
    exit_code INTEGER,
    trigger TEXT,
    queue_files INTEGER NOT NULL DEFAULT 0,
    queue_bytes INTEGER NOT NULL DEFAULT 0,
    distribution TEXT,                -- JSON of the scan's size distribution
    message TEXT
);
CREATE TABLE IF NOT EXISTS stages (
    id INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL REFERENCES sessions(id),
    number INTEGER NOT NULL,
    account TEXT NOT NULL,
    transfers INTEGER NOT NULL,
    overshoot INTEGER NOT NULL,
    planned_files INTEGER NOT NULL,
    planned_bytes INTEGER NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    outcome TEXT,                     -- completed | limit | fatal | stalled | failed | interrupted
    exit_code INTEGER,
    message TEXT
);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL REFERENCES sessions(id),
    stage_id INTEGER NOT NULL REFERENCES stages(id),
    uploader TEXT NOT NULL,
    account TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL NOT NULL,
    outcome TEXT NOT NULL,            -- uploaded | failed | limit
    error TEXT
);
CREATE INDEX IF NOT EXISTS files_account_ended ON files(account, outcome, ended_at);
CREATE TABLE IF NOT EXISTS blocks (
    id INTEGER PRIMARY KEY,
    account TEXT NOT NULL,
    uploader TEXT NOT NULL,
    at REAL NOT NULL,
    until REAL NOT NULL,
    reason TEXT NOT NULL,
    observed_limit_bytes INTEGER,     -- bytes in the window when the provider said "limit"
    message TEXT
);
CREATE INDEX IF NOT EXISTS blocks_account_until ON blocks(account, until);
-- The blocks in force and the limits observed within the window, read at every plan and
-- scrape, are range scans on time: blocks accumulate, one per limit hit, for good.
CREATE INDEX IF NOT EXISTS blocks_until ON blocks(until);
CREATE INDEX IF NOT EXISTS blocks_at_observed ON blocks(at, account, observed_limit_bytes);
-- Covers the rolling-window sums for every account in one range scan.
CREATE INDEX IF NOT EXISTS files_outcome_ended ON files(outcome, ended_at, account, size);
-- One seek for an uploader's last upload (a metric read at each scrape): without it, an
-- uploader whose last upload is older than the others' scans all their history.
CREATE INDEX IF NOT EXISTS files_uploader_ended ON files(uploader, outcome, ended_at);
-- Monotonic totals for the metrics, kept as they happen so a scrape never sums history.
CREATE TABLE IF NOT EXISTS counters (
    uploader TEXT NOT NULL,
    name TEXT NOT NULL,               -- uploaded_bytes | uploaded_files | rclone_exits | rotations | ...
    account TEXT NOT NULL DEFAULT '',
    label TEXT NOT NULL DEFAULT '',
    value REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (uploader, name, account, label)
);
"""


@dataclass(frozen=True, slots=True)
class Block:
    account: str
    at: float
    until: float
    reason: str
    observed_limit_bytes: int | None
    message: str | None


@dataclass(frozen=True, slots=True)
class Usage:
    """One account's standing in the rolling window that ends at `now`."""

    account: str
    used_bytes: int
    oldest_at: float | None  # when the oldest upload still in the window ended
    block: Block | None  # the block in force at `now`, if any
    observed_limit_bytes: int | None  # the lowest limit the provider showed within the window


# --- accounting schema (issue 9: files left, broken accounts, service-account identities) ---
# One idempotent block, so it can become one migration step: every statement may run again.
_ACCOUNTING_SCHEMA = """
-- Accounts whose credentials the provider refused, each until the account works again.
CREATE TABLE IF NOT EXISTS broken_accounts (
    account TEXT PRIMARY KEY,
    uploader TEXT NOT NULL,
    at REAL NOT NULL,
    message TEXT
);
-- A service account is its key's client_email, whatever its key file is called: the ledger's
-- rows follow the identity to the account's current name.
CREATE TABLE IF NOT EXISTS account_identities (
    identity TEXT PRIMARY KEY,
    account TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_uploader ON sessions(uploader, id);
"""
# Tables whose `account` column names an account, renamed together when a key file is.
_ACCOUNT_TABLES = ("files", "blocks", "broken_accounts")


def _add_accounting_schema(cursor: sqlite3.Cursor) -> None:
    for statement in _ACCOUNTING_SCHEMA.split(";"):
        if statement.strip():
            cursor.execute(statement)
    columns = {row[1] for row in cursor.execute("PRAGMA table_info(sessions)")}
    if "files_left" not in columns:
        # JSON: reason -> number of files the session left (see cloudplow/session.py)
        cursor.execute("ALTER TABLE sessions ADD COLUMN files_left TEXT")


def _rename_account(cursor: sqlite3.Cursor, old: str, new: str) -> None:
    """Move every row of account `old` to `new`; counters of the same key are added up."""
    for table in _ACCOUNT_TABLES:
        cursor.execute(f"UPDATE {table} SET account=? WHERE account=?", (new, old))  # noqa: S608
    cursor.execute(
        "INSERT INTO counters (uploader, name, account, label, value) SELECT uploader, name, ?, label, value"
        " FROM counters WHERE account=? AND true"
        " ON CONFLICT (uploader, name, account, label) DO UPDATE SET value = value + excluded.value",
        (new, old),
    )
    cursor.execute("DELETE FROM counters WHERE account=?", (old,))


class AccountingLedger:
    """The ledger's part for issue 9, mixed into Ledger: files left, broken accounts, identities."""

    _lock: threading.RLock
    _transaction: Callable[[], AbstractContextManager[sqlite3.Cursor]]
    _query: Callable[..., list[tuple]]

    def record_files_left(self, session_id: int, counts: Mapping[str, int]) -> None:
        """Given a session and reason -> files it left, keep the counts with the session."""
        with self._transaction() as cursor:
            cursor.execute(
                "UPDATE sessions SET files_left=? WHERE id=?", (json.dumps(dict(counts)), session_id)
            )

    def last_files_left(self, uploader: str) -> dict[str, int]:
        """Return reason -> files left by the uploader's last ended session (empty: none yet)."""
        rows = self._query(
            "SELECT files_left FROM sessions WHERE uploader=? AND ended_at IS NOT NULL"
            " ORDER BY id DESC LIMIT 1",
            (uploader,),
        )
        return json.loads(rows[0][0]) if rows and rows[0][0] else {}

    def mark_broken(self, account: str, *, uploader: str, now: float, message: str) -> None:
        with self._transaction() as cursor:
            cursor.execute(
                "INSERT INTO broken_accounts (account, uploader, at, message) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (account) DO UPDATE SET uploader=excluded.uploader, at=excluded.at,"
                " message=excluded.message",
                (account, uploader, now, message),
            )
            _increment(cursor, uploader, "broken", 1, account=account)

    def clear_broken(self, account: str) -> bool:
        """Forget that an account was broken (its credentials worked); return whether it was."""
        with self._transaction() as cursor:
            cursor.execute("DELETE FROM broken_accounts WHERE account=?", (account,))
            return cursor.rowcount > 0

    def broken_accounts(self) -> dict[str, tuple[float, str]]:
        """Return account -> (when it broke, rclone's message) for every broken account."""
        rows = self._query("SELECT account, at, message FROM broken_accounts")
        return {account: (at, message or "") for account, at, message in rows}

    def bind_identities(self, identities: Mapping[str, str]) -> list[tuple[str, str]]:
        """
        Given account name -> identity (a service account's client_email) for
        the configured accounts, move the ledger's rows of each identity to its
        current name, and return the (old, new) renames done. A name still held
        by an identity no longer configured hands that history to the identity's
        own name, so a new key under an old file name starts with nothing.
        """
        wanted = {identity: name for name, identity in identities.items()}
        with self._transaction() as cursor:
            bound = dict(cursor.execute("SELECT identity, account FROM account_identities").fetchall())
            renames = {old: wanted[identity] for identity, old in bound.items() if identity in wanted}
            renames.update(
                {
                    old: identity
                    for identity, old in bound.items()
                    if identity not in wanted and old in identities
                }
            )
            renames = {old: new for old, new in renames.items() if old != new}
            # Through temporary names: two key files may have swapped names.
            for old in renames:
                _rename_account(cursor, old, "\0" + old)
            for old, new in renames.items():
                _rename_account(cursor, "\0" + old, new)
            for identity, old in bound.items():
                if old in renames:
                    cursor.execute(
                        "UPDATE account_identities SET account=? WHERE identity=?", (renames[old], identity)
                    )
            cursor.executemany(
                "INSERT INTO account_identities (identity, account) VALUES (?, ?)"
                " ON CONFLICT (identity) DO UPDATE SET account=excluded.account",
                list(wanted.items()),
            )
        return sorted(renames.items())


# --- end of the accounting schema and its methods ----------------------------------------


class Ledger(AccountingLedger):
    """
    The SQLite ledger. Safe to share between the session thread and the rclone
    log reader thread: one connection, one lock, one transaction per write.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=NORMAL")
        self._connection.execute("PRAGMA busy_timeout=10000")
        with self._transaction() as cursor:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    cursor.execute(statement)
            _add_accounting_schema(cursor)
            cursor.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> Ledger:
        return cls(state_dir / "cloudplow.sqlite3")

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cursor = self._connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")

    def _query(self, sql: str, parameters: Sequence[object] = ()) -> list[tuple]:
        with self._lock:
            return self._connection.execute(sql, parameters).fetchall()

    # --- sessions and stages ---------------------------------------------------------

    def start_session(
        self,
        uploader: str,
        *,
        now: float,
        trigger: str,
        queue_files: int,
        queue_bytes: int,
        distribution: dict | None,
    ) -> int:
        with self._transaction() as cursor:
            cursor.execute(
                "INSERT INTO sessions (uploader, started_at, state, trigger, queue_files, queue_bytes,"
                " distribution) VALUES (?, ?, 'running', ?, ?, ?, ?)",
                (
                    uploader,
                    now,
                    trigger,
                    queue_files,
                    queue_bytes,
                    json.dumps(distribution) if distribution is not None else None,
                ),
            )
            return int(cursor.lastrowid or 0)

    def end_session(self, session_id: int, *, now: float, state: str, exit_code: int, message: str) -> None:
        with self._transaction() as cursor:
            cursor.execute(
                "UPDATE sessions SET ended_at=?, state=?, exit_code=?, message=? WHERE id=?",
                (now, state, exit_code, message, session_id),
            )

    def start_stage(
        self,
        session_id: int,
        *,
        number: int,
        account: str,
        transfers: int,
        overshoot: bool,
        planned_files: int,
        planned_bytes: int,
        now: float,
    ) -> int:
        with self._transaction() as cursor:
            cursor.execute(
                "INSERT INTO stages (session_id, number, account, transfers, overshoot, planned_files,"
                " planned_bytes, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (session_id, number, account, transfers, int(overshoot), planned_files, planned_bytes, now),
            )
            return int(cursor.lastrowid or 0)

    def end_stage(
        self, stage_id: int, *, now: float, outcome: str, exit_code: int | None, message: str
    ) -> None:
        with self._transaction() as cursor:
            cursor.execute(
                "UPDATE stages SET ended_at=?, outcome=?, exit_code=?, message=? WHERE id=?",
                (now, outcome, exit_code, message, stage_id),
            )

    def record_file(
        self,
        *,
        session_id: int,
        stage_id: int,
        uploader: str,
        account: str,
        path: str,
        size: int,
        started_at: float,
        ended_at: float,
        outcome: str,
        error: str | None = None,
    ) -> None:
        """Record one file's outcome the moment rclone reports it; `uploaded` counts as usage."""
        with self._transaction() as cursor:
            cursor.execute(
                "INSERT INTO files (session_id, stage_id, uploader, account, path, size, started_at,"
                " ended_at, outcome, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (session_id, stage_id, uploader, account, path, size, started_at, ended_at, outcome, error),
            )
            if outcome == "uploaded":
                _increment(cursor, uploader, "uploaded_bytes", size, account=account)
                _increment(cursor, uploader, "uploaded_files", 1, account=account)

    def increment(
        self, uploader: str, name: str, amount: float = 1, *, account: str = "", label: str = ""
    ) -> None:
        """Add `amount` to one of the uploader's persistent counters."""
        with self._transaction() as cursor:
            _increment(cursor, uploader, name, amount, account=account, label=label)

    def counters(self) -> list[tuple[str, str, str, str, float]]:
        """Return every counter as (uploader, name, account, label, value)."""
        return [
            tuple(row)
            for row in self._query(  # type: ignore[misc]
                "SELECT uploader, name, account, label, value FROM counters"
            )
        ]

    def block_account(
        self,
        account: str,
        *,
        uploader: str,
        now: float,
        until: float,
        reason: str,
        observed_limit_bytes: int | None,
        message: str,
    ) -> None:
        with self._transaction() as cursor:
            cursor.execute(
                "INSERT INTO blocks (account, uploader, at, until, reason, observed_limit_bytes,"
                " message) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (account, uploader, now, until, reason, observed_limit_bytes, message),
            )
            _increment(cursor, uploader, "limit_hits", 1, account=account)

    # Imported usage is one synthetic file row: no session, no path, so only the quota sums see it.
    IMPORTED_PATH = ""

    def import_usage(self, account: str, *, uploader: str, size: int, at: float) -> None:
        """
        Record `size` bytes as uploaded by `account` at `at`, from outside cloudplow (the
        old cloudplow's quota cache): the rolling window counts them until `at` + window.
        Replaces what an earlier import recorded for this account and uploader.
        """
        with self._transaction() as cursor:
            cursor.execute(
                "DELETE FROM files WHERE session_id=0 AND path=? AND account=? AND uploader=?",
                (self.IMPORTED_PATH, account, uploader),
            )
            cursor.execute(
                "INSERT INTO files (session_id, stage_id, uploader, account, path, size, started_at,"
                " ended_at, outcome, error) VALUES (0, 0, ?, ?, ?, ?, ?, ?, 'uploaded', 'imported')",
                (uploader, account, self.IMPORTED_PATH, size, at, at),
            )

    # --- reading ---------------------------------------------------------------------

    def usage(self, accounts: Sequence[str], *, now: float, window_seconds: float) -> list[Usage]:
        """
        Given account names and the rolling window ending at `now`, return each
        account's used bytes, the block in force and the lowest limit the
        provider showed within the window, in the order given. Three queries
        whatever the number of accounts: a scrape of 500 accounts stays cheap.
        """
        window_start = now - window_seconds
        used = {
            account: (int(total), oldest)
            for account, total, oldest in self._query(
                "SELECT account, SUM(size), MIN(ended_at) FROM files"
                " WHERE outcome='uploaded' AND ended_at>? GROUP BY account",
                (window_start,),
            )
        }
        blocks: dict[str, Block] = {}
        for row in self._query(
            "SELECT account, at, until, reason, observed_limit_bytes, message FROM blocks"
            " WHERE until>? ORDER BY until",
            (now,),
        ):
            blocks[row[0]] = Block(*row)  # the latest `until` wins
        # Without INDEXED BY, SQLite walks blocks_account_until for the GROUP BY: every block ever.
        observed = dict(
            self._query(
                "SELECT account, MIN(observed_limit_bytes) FROM blocks INDEXED BY blocks_at_observed"
                " WHERE at>? AND observed_limit_bytes IS NOT NULL GROUP BY account",
                (window_start,),
            )
        )
        return [
            Usage(
                account=account,
                used_bytes=used.get(account, (0, None))[0],
                oldest_at=used.get(account, (0, None))[1],
                block=blocks.get(account),
                observed_limit_bytes=observed.get(account),
            )
            for account in accounts
        ]

    def last_upload_at(self, uploader: str) -> float | None:
        """Return when this uploader last uploaded a file, or None if never."""
        return self._query(
            "SELECT MAX(ended_at) FROM files WHERE uploader=? AND outcome='uploaded'", (uploader,)
        )[0][0]

    def uploaded_bytes_by_account(self) -> dict[str, int]:
        """Return all bytes ever recorded as uploaded, per account (for checks and reports)."""
        rows = self._query("SELECT account, SUM(size) FROM files WHERE outcome='uploaded' GROUP BY account")
        return {account: int(total) for account, total in rows}

    def uploaded_sizes(self, uploader: str) -> dict[str, int]:
        """Return path -> size of every file this uploader has uploaded (copy mode skips them)."""
        rows = self._query(
            "SELECT path, size FROM files WHERE uploader=? AND outcome='uploaded'", (uploader,)
        )
        return dict(rows)

    def sessions(self, uploader: str | None = None, limit: int = 10) -> list[dict]:
        sql = (
            "SELECT id, uploader, started_at, ended_at, state, exit_code, trigger, queue_files,"
            " queue_bytes, message FROM sessions"
        )
        parameters: list[object] = []
        if uploader is not None:
            sql += " WHERE uploader=?"
            parameters.append(uploader)
        sql += " ORDER BY id DESC LIMIT ?"
        parameters.append(limit)
        columns = (
            "id",
            "uploader",
            "started_at",
            "ended_at",
            "state",
            "exit_code",
            "trigger",
            "queue_files",
            "queue_bytes",
            "message",
        )
        sessions = [dict(zip(columns, row, strict=True)) for row in self._query(sql, parameters)]
        for session in sessions:
            totals = self._query(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM files WHERE session_id=? AND"
                " outcome='uploaded'",
                (session["id"],),
            )[0]
            session["uploaded_files"], session["uploaded_bytes"] = int(totals[0]), int(totals[1])
            session["stages"] = self._query(
                "SELECT COUNT(*) FROM stages WHERE session_id=?", (session["id"],)
            )[0][0]
        return sessions

    def stages(self, session_id: int) -> list[dict]:
        columns = (
            "id",
            "number",
            "account",
            "transfers",
            "overshoot",
            "planned_files",
            "planned_bytes",
            "started_at",
            "ended_at",
            "outcome",
            "exit_code",
            "message",
        )
        rows = self._query(
            f"SELECT {', '.join(columns)} FROM stages WHERE session_id=? ORDER BY number",  # noqa: S608
            (session_id,),
        )
        stages = [dict(zip(columns, row, strict=True)) for row in rows]
        for stage in stages:
            files, size = self._query(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM files WHERE stage_id=? AND outcome='uploaded'",
                (stage["id"],),
            )[0]
            stage["uploaded_files"], stage["uploaded_bytes"] = int(files), int(size)
        return stages

    def files(self, session_id: int) -> list[dict]:
        columns = ("path", "size", "account", "outcome", "error", "stage_id")
        rows = self._query(
            f"SELECT {', '.join(columns)} FROM files WHERE session_id=? ORDER BY id",  # noqa: S608
            (session_id,),
        )
        return [dict(zip(columns, row, strict=True)) for row in rows]

    def mark_interrupted_sessions(self, uploader: str, *, now: float) -> int:
        """
        Close the uploader's sessions left `running` by a process that died, and
        return how many. Call it only while holding that uploader's session lock.
        """
        with self._transaction() as cursor:
            cursor.execute(
                "UPDATE stages SET ended_at=?, outcome='interrupted' WHERE ended_at IS NULL AND"
                " session_id IN (SELECT id FROM sessions WHERE uploader=? AND state='running')",
                (now, uploader),
            )
            cursor.execute(
                "UPDATE sessions SET ended_at=?, state='interrupted', message='process ended during"
                " the session' WHERE uploader=? AND state='running'",
                (now, uploader),
            )
            return cursor.rowcount


def _increment(
    cursor: sqlite3.Cursor,
    uploader: str,
    name: str,
    amount: float,
    *,
    account: str = "",
    label: str = "",
) -> None:
    cursor.execute(
        "INSERT INTO counters (uploader, name, account, label, value) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (uploader, name, account, label) DO UPDATE SET value = value + excluded.value",
        (uploader, name, account, label, amount),
    )
