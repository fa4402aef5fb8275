"""``prep plugins``: what is installed, with versions and hooks, and what failed to load."""

from __future__ import annotations

import json

import typer

from prep.cli import output


def plugins_command(
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """List the plugins prep loaded (built-in and installed), their hooks, and any failures."""
    from prep.plugins import describe_plugins, plugin_host

    described = describe_plugins(plugin_host())
    if as_json:
        output.stdout.print_json(json.dumps(described))
        return
    from rich.table import Table

    table = Table(title="Plugins")
    for column in ("name", "version", "hooks"):
        table.add_column(column)
    for plugin in described["plugins"]:
        table.add_row(plugin["name"], plugin["version"], ", ".join(plugin["hooks"]))
    output.stdout.print(table)
    for failure in described["failures"]:
        output.stdout.print(
            "[red]Failed[/] " + output.escape(f"{failure['name']} ({failure['version']}) at {failure['stage']}: {failure['error']}")
        )
