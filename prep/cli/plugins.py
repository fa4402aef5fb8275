"""``prep plugins``: what is installed, with versions, hooks and what each registered; the
trainers with their options; and what failed to load or register."""

from __future__ import annotations

import json

import typer

from prep.cli import output


def plugins_command(
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """List the plugins, what each registered, and any failures.

    Built-in and installed plugins, with versions and hooks; the trainers with their
    architectures, recipes and default weights; presets, collate functions and splitters.
    """
    from prep.plugins import describe_plugins, plugin_host

    described = describe_plugins(plugin_host())
    if as_json:
        output.stdout.print_json(json.dumps(described))
        return
    from rich.table import Table

    table = Table(title="Plugins")
    for column in ("name", "version", "registered"):
        table.add_column(column, overflow="fold")  # a cut name cannot be looked up
    for plugin in described["plugins"]:
        registered = "\n".join(f"{kind}: {', '.join(names)}" for kind, names in plugin["registered"].items())
        other_hooks = [h for h in plugin["hooks"] if not h.startswith("register_")]
        if other_hooks:
            registered += ("\n" if registered else "") + f"hooks: {', '.join(other_hooks)}"
        table.add_row(output.escape(plugin["name"]), output.escape(plugin["version"]), output.escape(registered))
    output.stdout.print(table)
    trainers = Table(title="Trainers (prep train --plugin NAME)")
    trainers.add_column("name", no_wrap=True)  # what --plugin takes: whole, or it cannot be copied
    for column in ("task", "--arch", "--recipe", "--weights"):
        trainers.add_column(column, overflow="fold")
    for trainer in described["trainers"]:
        if "error" in trainer:
            trainers.add_row(output.escape(trainer["name"]), "", "", output.escape(trainer["error"]), "")
            continue
        archs = ", ".join(f"{a}*" if a == trainer["default_arch"] else a for a in trainer["architectures"]) or "-"
        recipes = ", ".join(f"{r}*" if r == trainer["default_recipe"] else r for r in trainer["recipes"]) or "-"
        weights = trainer.get("default_weights") or "-"
        trainers.add_row(*(output.escape(v) for v in (trainer["name"], trainer["task"], archs, recipes, weights)))
    output.stdout.print(trainers)
    output.stdout.print("* the default")
    for failure in described["failures"]:
        output.stdout.print(
            "[red]Failed[/] " + output.escape(f"{failure['name']} ({failure['version']}) at {failure['stage']}: {failure['error']}")
        )
