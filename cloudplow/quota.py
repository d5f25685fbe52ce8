"""Quota arithmetic: from the ledger's records to each account's standing now.

The provider does not say whether its 24 h window rolls or resets at a fixed
time, so the ledger's rolling window is the estimate and a real limit error
is the truth. When the provider says "limit" with U bytes in our window, the
account's effective quota becomes U for as long as that observation lies in
the window: its capacity then frees exactly as our recorded uploads age out,
and a block keeps it out of rotation until the oldest of them does.

Every function takes `now` as an argument; nothing here reads the clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cloudplow.ledger import Ledger, Usage
from cloudplow.plan import AccountState


@dataclass(frozen=True, slots=True)
class AccountReport:
    name: str
    configured_quota_bytes: int
    quota_bytes: int  # effective: lowered by an observed limit within the window
    used_bytes: int
    remaining_bytes: int
    blocked_until: float | None
    block_reason: str | None
    frees_at: float | None  # when the oldest upload in the window ages out
    observed_limit_bytes: int | None

    def to_state(self) -> AccountState:
        return AccountState(
            name=self.name,
            quota_bytes=self.quota_bytes,
            used_bytes=self.used_bytes,
            blocked=self.blocked_until is not None,
        )

    def to_dict(self) -> dict:
        return {field: getattr(self, field) for field in self.__slots__}


def account_report(usage: Usage, *, configured_quota_bytes: int, window_seconds: float) -> AccountReport:
    """Given one account's usage from the ledger and its configured quota, return its report."""
    quota_bytes = configured_quota_bytes
    if usage.observed_limit_bytes is not None:
        quota_bytes = min(quota_bytes, usage.observed_limit_bytes)
    return AccountReport(
        name=usage.account,
        configured_quota_bytes=configured_quota_bytes,
        quota_bytes=quota_bytes,
        used_bytes=usage.used_bytes,
        remaining_bytes=max(0, quota_bytes - usage.used_bytes),
        blocked_until=usage.block.until if usage.block else None,
        block_reason=usage.block.reason if usage.block else None,
        frees_at=usage.oldest_at + window_seconds if usage.oldest_at is not None else None,
        observed_limit_bytes=usage.observed_limit_bytes,
    )


def account_reports(
    ledger: Ledger,
    accounts: Sequence[str],
    *,
    configured_quota_bytes: int,
    window_seconds: float,
    now: float,
) -> list[AccountReport]:
    """Given account names in rotation order, return their reports at `now`."""
    return [
        account_report(usage, configured_quota_bytes=configured_quota_bytes, window_seconds=window_seconds)
        for usage in ledger.usage(accounts, now=now, window_seconds=window_seconds)
    ]


def block_until(usage: Usage, *, now: float, window_seconds: float) -> float:
    """
    Given an account's usage at the moment the provider refused it, return
    when it may be tried again: when the oldest upload we recorded in the
    window ages out, or a whole window from now if we recorded none (the bytes
    were spent elsewhere and we cannot know when they free).
    """
    if usage.oldest_at is None:
        return now + window_seconds
    return max(now + 60.0, usage.oldest_at + window_seconds)
