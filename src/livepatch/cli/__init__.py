"""The `livepatch` command.

Subcommands come from three places:
- this package (patch tooling: diff, keygen, inspect, apply, revert, status, history), registered below;
- entry point group `livepatch.servers`: each entry is a click command, run as `livepatch serve NAME`;
- entry point group `livepatch.commands`: each entry is a click command, run as `livepatch NAME`
  (lpbench provides `bench` and `demo`).
Entry points are loaded only when their command is invoked (or listed in --help), so the library never
imports a server or the harness on its own.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import click


def _entry_point_names(group: str) -> list[str]:
    return sorted(ep.name for ep in entry_points(group=group))


_COMMAND_PREFIX = {"livepatch.servers": "livepatch serve ", "livepatch.commands": "livepatch "}


def _needs_extra(group: str, ep: EntryPoint, missing: str | None) -> str:
    dist = ep.dist.name if ep.dist is not None else "livepatch"
    return (
        f"{_COMMAND_PREFIX.get(group, '')}{ep.name} needs: pip install '{dist}[{','.join(ep.extras)}]'"
        f" (missing module {missing})"
    )


def _naming_extra(group: str, ep: EntryPoint, callback: Callable[..., Any]) -> Callable[..., Any]:
    """`callback`, turning a missing optional dependency (imported late, inside the command) into an
    error that names the extra to install instead of a traceback."""

    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except ModuleNotFoundError as exc:
            if "pip install" in str(exc):  # already names its own extra (e.g. livepatch[metrics])
                raise click.ClickException(str(exc)) from exc
            raise click.ClickException(_needs_extra(group, ep, exc.name)) from exc

    return run


def _load_entry_point(group: str, name: str) -> click.Command | None:
    for ep in entry_points(group=group):
        if ep.name == name:
            try:
                cmd = ep.load()
            except ModuleNotFoundError as exc:
                if not ep.extras:
                    return _unavailable(name, f"cannot load {ep.value}: {exc}")
                # an optional dependency (pyproject.toml's extras): say how to install it
                return _unavailable(name, _needs_extra(group, ep, exc.name))
            except Exception as exc:  # a broken plugin must not take the whole command down
                return _unavailable(name, f"cannot load {ep.value}: {exc}")
            if not isinstance(cmd, click.Command):
                return _unavailable(name, f"entry point {ep.value} is not a click command")
            if ep.extras and cmd.callback is not None:
                cmd.callback = _naming_extra(group, ep, cmd.callback)
            return cmd
    return None


def _unavailable(name: str, why: str) -> click.Command:
    def fail() -> None:
        raise click.ClickException(f"`{name}` is unavailable: {why}")

    return click.Command(
        name, callback=fail, help=f"(unavailable: {why})", short_help="(unavailable)"
    )


class _PluginGroup(click.Group):
    """A click group that also offers the commands of one entry point group."""

    def __init__(self, *args: Any, plugin_group: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plugin_group = plugin_group

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_entry_point_names(self.plugin_group)))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or _load_entry_point(self.plugin_group, cmd_name)


class _Root(_PluginGroup):
    """The `livepatch` group. With --json anywhere on the command line, a usage error (exit 2) is also
    reported as one JSON object on stdout, like every other failure: scripts parse stdout either way."""

    def main(self, args: Any = None, *a: Any, standalone_mode: bool = True, **kw: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        run: Any = super().main  # click's overloads do not follow *args forwarding
        if not standalone_mode or "--json" not in argv:
            return run(argv, *a, standalone_mode=standalone_mode, **kw)
        try:
            return run(argv, *a, standalone_mode=False, **kw)
        except click.ClickException as exc:
            click.echo(json.dumps({"ok": False, "error": exc.format_message()}, indent=2))
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo(json.dumps({"ok": False, "error": "aborted"}, indent=2))
            sys.exit(1)


@click.group(cls=_Root, plugin_group="livepatch.commands")
@click.version_option(package_name="livepatch")
def main() -> None:
    """Zero-downtime code updates for running Python servers."""


@main.group(cls=_PluginGroup, plugin_group="livepatch.servers")
def serve() -> None:
    """Run a reference server prepared for live patching (e.g. `livepatch serve kv`)."""


# Patch tooling: diff, keygen, inspect, apply, revert, status, history.
from livepatch.cli import patching  # noqa: E402

patching.register(main)
from livepatch.cli.run import run_command  # noqa: E402

main.add_command(run_command)  # `livepatch run`: an unmodified server under livepatch
from livepatch.cli.corpus import corpus_command  # noqa: E402

main.add_command(corpus_command)  # `livepatch corpus`: the differ over a git history
from livepatch.cli import update  # noqa: E402

update.register(main)  # `livepatch update --validate`, promote, discard, update-status
from livepatch.replication.cli import replication_command  # noqa: E402

main.add_command(replication_command)  # `livepatch replication status`: hot standby
from livepatch.cli.switchover import switchover_command  # noqa: E402

main.add_command(switchover_command)  # `livepatch switchover`: planned primary/standby swap
