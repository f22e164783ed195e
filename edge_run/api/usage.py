"""``GET /v1/usage``: tokens per day (or model, or key) for the web page's Usage view and scripts.

An admin key sees every key's usage; any other key sees only its own.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from litestar import Request, get
from litestar.datastructures import State
from litestar.params import FromQuery

from edge_run.api.accounting import key_of
from edge_run.errors import InvalidRequest
from edge_run.keys.usage import since_seconds

__all__ = ["UsageReport", "usage"]


class UsageEntry(msgspec.Struct, kw_only=True):
    group: str  # the day (YYYY-MM-DD, local), model or key
    key: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    total_tokens: int


class UsageReport(msgspec.Struct, kw_only=True):
    since: float  # Unix time
    by: str
    scope: Literal["all keys", "this key"]
    data: list[UsageEntry]


@get("/usage", summary="Token usage per day, model or key (an admin key sees every key, others their own)")
async def usage(
    state: State, request: Request, since: FromQuery[str] = "7d", by: FromQuery[Literal["day", "model", "key"]] = "day"
) -> UsageReport:
    try:
        start = since_seconds(since)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="since") from None
    log = state.usage
    key = key_of(request)
    only = None if key is None or key.admin else key.name
    rows = [] if log is None else log.totals(since=start, by=by, key=only, split_keys=True)
    data = [
        UsageEntry(
            group=r.group,
            key=r.key,
            requests=r.requests,
            prompt_tokens=r.prompt_tokens,
            completion_tokens=r.completion_tokens,
            cached_tokens=r.cached_tokens,
            total_tokens=r.total_tokens,
        )
        for r in rows
    ]
    return UsageReport(since=start, by=by, scope="this key" if only else "all keys", data=data)
