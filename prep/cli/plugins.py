"""``prep plugins``: what is installed, with versions, hooks and what each registered; the
trainers with their options; and what failed to load or register."""

from __future__ import annotations

import json

import typer

from prep.cli import output


def plugins_command(
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
    arch: str | None = typer.Option(
        None, "--arch", metavar="PATTERN",
        help="List each trainer's architectures matching a shell pattern, such as '*convnext*' or 'timm:*', "
        "with their pretrained weights.",
    ),
) -> None:
    """List the plugins, what each registered, and any failures.

    Built-in and installed plugins, with versions and hooks; the trainers with their
    architectures, recipes and default weights; presets, collate functions and splitters.
    With --arch, the architectures of every trainer that match (timm's among them).
    """
    from prep.plugins import describe_plugins, plugin_host

    if arch is not None:
        _architectures_command(arch, as_json)
        return
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
    for column in ("tasks", "--arch", "--recipe", "--weights"):
        trainers.add_column(column, overflow="fold")
    for trainer in described["trainers"]:
        if "error" in trainer:
            trainers.add_row(output.escape(trainer["name"]), "", "", output.escape(trainer["error"]), "")
            continue
        archs = ", ".join(f"{a}*" if a == trainer["default_arch"] else a for a in trainer["architectures"]) or "-"
        recipes = ", ".join(f"{r}*" if r == trainer["default_recipe"] else r for r in trainer["recipes"]) or "-"
        weights = trainer.get("default_weights") or "-"
        trained = ", ".join(trainer.get("tasks") or [trainer["task"]])
        trainers.add_row(*(output.escape(v) for v in (trainer["name"], trained, archs, recipes, weights)))
    output.stdout.print(trainers)
    output.stdout.print("* the default")
    for trainer in described["trainers"]:
        if trainer.get("more_architectures"):
            output.stdout.print(output.escape(f"{trainer['name']} --arch also takes {trainer['more_architectures']}"))
    if (timm_version := _installed("timm")) is not None:
        output.stdout.print(output.escape(f"timm {timm_version} is installed: prep plugins --arch '*' counts and lists its architectures"))
    for failure in described["failures"]:
        output.stdout.print(
            "[red]Failed[/] " + output.escape(f"{failure['name']} ({failure['version']}) at {failure['stage']}: {failure['error']}")
        )


def _installed(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _architectures_command(pattern: str, as_json: bool) -> None:
    from prep.plugins import find_architectures

    found = find_architectures(pattern)
    if as_json:
        output.stdout.print_json(json.dumps(found))
        return
    from rich.table import Table

    table = Table(title=f"Architectures matching {pattern!r} (prep train --plugin TRAINER --arch NAME)")
    for column in ("trainer", "--arch", "pretrained weights (--weights imagenet: the first)"):
        table.add_column(column, overflow="fold")
    rows = 0
    for trainer, archs in found["trainers"].items():
        for row in archs:
            tags = row["pretrained"]
            table.add_row(output.escape(trainer), output.escape(row["arch"]), output.escape(", ".join(tags[:4]) + (f" (+{len(tags) - 4})" if len(tags) > 4 else "") or "none"))
            rows += 1
    output.stdout.print(table)
    counts = ", ".join(f"{trainer} {len(archs):,}" for trainer, archs in found["trainers"].items())
    output.stdout.print(output.escape(f"{rows:,} architectures match ({counts})"))
    for failure in found["failures"]:
        output.stderr.print(output.escape(failure))
