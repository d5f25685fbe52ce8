"""Reading rclone's error text: credentials refused, and why a file was not uploaded.

rclone reports a refused login the same way whatever the cause: the remote
cannot even be opened ("Failed to create file system ...: 401 ...") or each
upload fails with it. An account whose credentials are refused is broken
(revoked key, wrong password, disabled user), not out of quota: the session
goes on with the next account. The provider's limit is a 403 too, so the
limit patterns are read first; so are the 403s that every account would get
(a full shared drive, a short rate limit that rclone retries itself).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_REFUSED = re.compile(
    r"\b401\b|unauthori[sz]ed|not authori[sz]ed|invalid_grant|invalid_client|unauthorized_client"
    r"|\b403\b|forbidden"
    r"|service account credentials file|error processing credentials|failed to read credentials"
    r"|cannot fetch token|couldn't read service account",
    re.IGNORECASE,
)
# 403s that are not the account's fault: every account would get them, so blocking them all is wrong.
_NOT_THE_ACCOUNT = re.compile(
    r"storageQuotaExceeded|storage quota|teamDrive\w*Limit|rateLimitExceeded(?<!userRateLimitExceeded)"
    r"|Rate Limit Exceeded(?<!User Rate Limit Exceeded)|sharingRateLimitExceeded",
    re.IGNORECASE,
)
_VANISHED = re.compile(
    r"no such file|file does not exist|object not found|not found in source", re.IGNORECASE
)
_CHANGED = re.compile(r"source file is being updated|size changed|modification time changed", re.IGNORECASE)


def credentials_refused(text: str, limit_patterns: Sequence[re.Pattern[str]]) -> bool:
    """
    Given one rclone error line and the uploader's limit patterns, return
    whether it says the account's credentials were refused (401, a 403 that
    is neither the limit nor a pool-wide refusal, invalid_grant, an unusable
    service-account key).
    """
    if any(pattern.search(text) for pattern in limit_patterns):
        return False
    return bool(_REFUSED.search(text)) and not _NOT_THE_ACCOUNT.search(text)


def failure_reason(text: str) -> str:
    """Given the error rclone gave for one file, return why it was left: vanished, changed or failed."""
    if _CHANGED.search(text):
        return "changed"
    if _VANISHED.search(text):
        return "vanished"
    return "failed"
