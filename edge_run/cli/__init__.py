"""The ``edge-run`` command line. Thin: parse, call, print."""

from __future__ import annotations

import click

from edge_run import __version__
from edge_run.cli.keys import keys as keys_group
from edge_run.cli.library import check_library as check_library_command
from edge_run.cli.library import search as search_command
from edge_run.cli.models import models as models_group
from edge_run.cli.models import ps as ps_command
from edge_run.cli.serve import serve as serve_command

__all__ = ["main"]


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edge-run")
@click.option("--no-browser", is_flag=True, help="With no command: do not open the web page.")
@click.pass_context
def main(ctx: click.Context, no_browser: bool) -> None:
    """edge-run: an authenticated, OpenAI-compatible chat endpoint on your own machine.

    With no command (a double-click), runs `serve` with the defaults and opens the web page,
    logged in through a one-time link.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(serve_command, browser=not no_browser)


# imported under other names: the plain ones would turn edge_run.cli.serve, .keys and .models into commands
main.add_command(serve_command)
main.add_command(keys_group)
main.add_command(models_group)
main.add_command(ps_command)
models_group.add_command(search_command)
models_group.add_command(check_library_command)
