"""The ``prep`` command line: one root app, one module per command, plugin commands last."""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from prep.util.version import __version__
from prep.cli import output
from prep.errors import INTERRUPTED_EXIT_CODE
from prep.errors import DiskError, PrepError


def _print_error(exc: PrepError) -> None:
    # A file name that is not UTF-8 reaches here as surrogates, which no terminal encoding
    # can print: shown as \udcXX escapes rather than a second error.
    message = str(exc).encode("utf-8", "backslashreplace").decode("utf-8")
    output.stderr.print(f"[bold red]Error:[/] {output.escape(message)}", markup=True, soft_wrap=True)


GLOBAL_FLAGS = ("-q", "--quiet", "-v", "--verbose")


def _hide_flag_metavars(command) -> None:  # noqa: ANN001 - a click command
    """A flag takes no value, so its help shows none (Typer would print ``<bool>``)."""
    for param in getattr(command, "params", []):
        if getattr(param, "is_flag", False) and not param.metavar:
            param.metavar = ""
    help_option = command.get_help_option(typer.Context(command)) if command is not None else None
    if help_option is not None:
        help_option.metavar = ""


class PrepGroup(TyperGroup):
    """Turns every ``PrepError`` a command raises into a message and an exit code.

    Library code only raises; this is the one place where errors become user output, and
    it covers plugin commands too. The disk's own errors (a full disk, a read-only folder,
    a name too long) reach here as ``OSError`` from anywhere in a command and get one line
    naming the path and the cause; a Ctrl-C exits 130, as shells expect.
    """

    def parse_args(self, ctx, args):  # noqa: ANN001 - click's signature
        # `prep split X -q` means what `prep -q split X` means, unless the command has a
        # -q of its own.
        if args and not args[0].startswith("-"):
            command = self.get_command(ctx, args[0])
            own = {opt for param in getattr(command, "params", []) for opt in getattr(param, "opts", [])}
            end = args.index("--") if "--" in args else len(args)
            moved = [a for a in args[1:end] if a in GLOBAL_FLAGS and a not in own]
            if moved:
                rest = [a for a in args[1:end] if a not in moved]
                args = moved + [args[0]] + rest + args[end:]
        return super().parse_args(ctx, args)

    def get_command(self, ctx, name):  # noqa: ANN001 - click's signature
        command = super().get_command(ctx, name)
        _hide_flag_metavars(command)
        return command

    def format_help(self, ctx, formatter):  # noqa: ANN001 - click's signature
        _hide_flag_metavars(self)
        return super().format_help(ctx, formatter)

    def invoke(self, ctx):  # noqa: ANN001 - click's signature
        try:
            return super().invoke(ctx)
        except PrepError as exc:
            _print_error(exc)
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:
            _print_error(DiskError.from_os_error(exc))
            raise typer.Exit(DiskError.exit_code) from None
        except KeyboardInterrupt:
            output.stderr.print("\nInterrupted.")
            raise typer.Exit(INTERRUPTED_EXIT_CODE) from None


app = typer.Typer(
    cls=PrepGroup,
    name="prep",
    no_args_is_help=True,
    add_completion=False,
    help="From a raw Kaggle image folder to a trained PyTorch model.",
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"prep {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Say more: plugin loading, every rejected file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors and requested output."),
) -> None:
    """From a raw Kaggle image folder to a trained PyTorch model."""
    output.configure(verbose, quiet)
    if verbose:
        from prep.plugins import plugin_host

        # The plugins loaded before the options were read, so their lines are printed now.
        for line in plugin_host().loaded:
            output.stderr.print(output.escape(line), soft_wrap=True)


def _register_commands() -> None:
    from prep.cli import augment, evaluate, export, lr_find, plugins, predict, sample, split, stats, train
    from prep.plugins import plugin_host

    app.command("split")(split.split_command)
    app.command("stats")(stats.stats_command)
    app.command("augment")(augment.augment_command)
    app.command("train", cls=train.TrainCommand)(train.train_command)
    app.command("evaluate")(evaluate.evaluate_command)
    app.command("predict")(predict.predict_command)
    app.command("lr-find", cls=train.TrainCommand)(lr_find.lr_find_command)
    app.command("export")(export.export_command)
    app.command("sample")(sample.sample_command)
    app.command("plugins")(plugins.plugins_command)
    try:
        plugin_host().call_each("register_commands", lambda plugin: {"app": app})
    except PrepError as exc:  # strict plugin mode: the CLI must still explain itself
        _print_error(exc)
        raise SystemExit(exc.exit_code) from None


_register_commands()


def main() -> None:
    app()
