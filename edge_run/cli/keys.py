"""``edge-run keys ...``: create, change, list and revoke API keys, and read their usage."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from edge_run.paths import Paths

if TYPE_CHECKING:
    from edge_run.keys import KeyRecord, KeyStore

__all__ = ["keys"]

OFF = ("off", "none", "unlimited")


def _store() -> KeyStore:
    from edge_run.keys import KeyStore

    paths = Paths.resolve()
    return KeyStore(paths.keys_db, legacy=paths.keys_file)


class _Limit(click.ParamType):
    """A positive number, or ``off``."""

    name = "N|off"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if isinstance(value, int) or str(value).lower() in OFF:
            return value if isinstance(value, int) else "off"
        try:
            number = int(value)
        except ValueError:
            number = 0
        if number < 1:
            self.fail(f"{value!r} is neither a number of 1 or more nor `off`", param, ctx)
        return number


class _Expiry(click.ParamType):
    """``30d``, ``12h``, a date ``YYYY-MM-DD`` (the end of that day, local time), or ``never``."""

    name = "30d|YYYY-MM-DD|never"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        text = str(value).strip().lower()
        if text == "never":
            return "off"
        if m := re.fullmatch(r"(\d+)([dh])", text):
            return int(time.time()) + int(m[1]) * (86400 if m[2] == "d" else 3600)
        try:
            day = dt.datetime.strptime(text, "%Y-%m-%d")
        except ValueError:
            self.fail(f"{value!r}: give 30d, 12h, a date YYYY-MM-DD or never", param, ctx)
        return int((day + dt.timedelta(days=1)).timestamp())


def _key_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The attributes ``keys create`` sets and ``keys update`` changes."""
    options = [
        click.option("--models", help="Model ids this key may use: comma-separated globs (team/*).  [default: all]"),
        click.option("--rpm", type=_Limit(), help="Requests per minute."),
        click.option("--tpm", type=_Limit(), help="Tokens per minute (prompt + completion, counted as they flow)."),
        click.option("--max-parallel", type=_Limit(), help="Requests at once."),
        click.option("--daily-tokens", type=_Limit(), help="Tokens per day (local time)."),
        click.option("--expires", type=_Expiry(), help="30d, 12h, YYYY-MM-DD (the end of that day) or never."),
        click.option("--role", type=click.Choice(["user", "admin"]), help="admin: all keys' usage.  [default: user]"),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def _attributes(**given: Any) -> dict[str, Any]:
    """The options given, as KeyRecord fields (``off`` turns a limit off)."""
    out: dict[str, Any] = {}
    for name, value in given.items():
        if value is None:
            continue
        if name == "models":
            out[name] = tuple(p.strip() for p in value.split(",") if p.strip())
        else:
            out[name] = None if value == "off" else value
    return out


def _limits(r: KeyRecord) -> str:
    parts = [f"{name.replace('_', '-')} {getattr(r, name)}" for name in ("rpm", "tpm", "max_parallel", "daily_tokens")]
    shown = [
        p for p, name in zip(parts, ("rpm", "tpm", "max_parallel", "daily_tokens"), strict=True) if getattr(r, name)
    ]
    return ", ".join(shown) or "no limits"


def _when(ts: float | None, never: str = "-") -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else never


@click.group()
def keys() -> None:
    """Manage the API keys (stored hashed in SQLite, file mode 0600): scopes, limits and usage."""


@keys.command("create")
@click.option("--name", help="A label for the key.  [default: key-N]")
@_key_options
def keys_create(name: str | None, **options: Any) -> None:
    """Create a key and print it once."""
    try:
        key, record = _store().create(name, **_attributes(**options))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(key)
    click.echo(f"created `{record.name}` ({record.prefix}...; {_limits(record)}); it is not shown again", err=True)


@keys.command("update")
@click.argument("name")
@_key_options
def keys_update(name: str, **options: Any) -> None:
    """Change a key's models, limits, expiry or role; a running server applies them from the next request."""
    attributes = _attributes(**options)
    if not attributes:
        raise click.UsageError("nothing to change: give --models, --rpm, --tpm, --max-parallel, --daily-tokens, "
                               "--expires or --role")  # fmt: skip
    try:
        record = _store().update(name, **attributes)
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0])) from exc
    click.echo(f"updated `{record.name}`: {_limits(record)}")


@keys.command("list")
def keys_list() -> None:
    """List keys: name, prefix, role, models, limits, last use and expiry."""
    from edge_run.keys.usage import UsageLog

    store = _store()
    records = store.list()
    if not records:
        click.echo("no keys yet: `edge-run keys create`", err=True)
        return
    last = UsageLog(store).last_used()
    for r in records:
        models = ",".join(r.models) or "all models"
        expires = _when(r.expires, "never") + (" (expired)" if r.expired() else "")
        click.echo(
            f"{r.name}\t{r.prefix}...\t{r.role}\t{models}\t{_limits(r)}\tlast used {_when(last.get(r.name), 'never')}"
            f"\texpires {expires}\tcreated {_when(r.created)}"
        )


@keys.command("revoke")
@click.argument("name_or_prefix")
def keys_revoke(name_or_prefix: str) -> None:
    """Revoke a key by name or prefix; a running server stops accepting it at once."""
    try:
        record = _store().revoke(name_or_prefix)
    except (KeyError, ValueError) as exc:
        raise click.ClickException(str(exc.args[0] if exc.args else exc)) from exc
    click.echo(f"revoked `{record.name}` ({record.prefix}...)")


@keys.command("usage")
@click.option("--key", "key_name", help="Only this key's requests.")
@click.option("--since", default="7d", show_default=True, help="How far back: 7d, 12h, 30m.")
@click.option("--by", type=click.Choice(["day", "model", "key"]), default="day", show_default=True)
def keys_usage(key_name: str | None, since: str, by: str) -> None:
    """Requests and tokens per day, model or key (written by the server about once a second)."""
    from edge_run.keys.usage import UsageLog, since_seconds

    try:
        start = since_seconds(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from exc
    rows = UsageLog(_store()).totals(since=start, by=by, key=key_name)  # type: ignore[arg-type]
    table: list[tuple[str, ...]] = [(by.upper(), "REQUESTS", "PROMPT", "COMPLETION", "CACHED", "TOTAL")]
    for r in rows:
        numbers = (r.requests, r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.total_tokens)
        table.append((r.group, *map(str, numbers)))
    totals = [sum(int(row[i]) for row in table[1:]) for i in range(1, 6)]
    table.append(("total", *map(str, totals)))
    widths = [max(len(row[i]) for row in table) for i in range(6)]
    for row in table:
        click.echo(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        )
