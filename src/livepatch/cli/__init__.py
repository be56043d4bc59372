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

from importlib.metadata import entry_points
from typing import Any

import click


def _entry_point_names(group: str) -> list[str]:
    return sorted(ep.name for ep in entry_points(group=group))


_COMMAND_PREFIX = {"livepatch.servers": "livepatch serve ", "livepatch.commands": "livepatch "}


def _load_entry_point(group: str, name: str) -> click.Command | None:
    for ep in entry_points(group=group):
        if ep.name == name:
            try:
                cmd = ep.load()
            except ModuleNotFoundError as exc:
                if not ep.extras:
                    return _unavailable(name, f"cannot load {ep.value}: {exc}")
                # an optional dependency (pyproject.toml's extras): say how to install it
                dist = ep.dist.name if ep.dist is not None else "livepatch"
                return _unavailable(
                    name,
                    f"{_COMMAND_PREFIX.get(group, '')}{name} needs: "
                    f"pip install '{dist}[{','.join(ep.extras)}]' (missing module {exc.name})",
                )
            except Exception as exc:  # a broken plugin must not take the whole command down
                return _unavailable(name, f"cannot load {ep.value}: {exc}")
            if not isinstance(cmd, click.Command):
                return _unavailable(name, f"entry point {ep.value} is not a click command")
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


@click.group(cls=_PluginGroup, plugin_group="livepatch.commands")
@click.version_option(package_name="livepatch")
def main() -> None:
    """Zero-downtime code updates for running Python servers."""


@main.group(cls=_PluginGroup, plugin_group="livepatch.servers")
def serve() -> None:
    """Run a reference server prepared for live patching (e.g. `livepatch serve kv`)."""


# Patch tooling: diff, keygen, inspect, apply, revert, status, history.
from livepatch.cli import patching  # noqa: E402

patching.register(main)
