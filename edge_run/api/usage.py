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
from edge_run.keys.usage import UsageRow, since_seconds

__all__ = ["UsageReport", "usage"]


class UsageReport(msgspec.Struct, kw_only=True):
    since: float  # Unix time
    by: str
    scope: Literal["all keys", "this key"]
    data: list[UsageRow]


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
    return UsageReport(since=start, by=by, scope="this key" if only else "all keys", data=rows)
