"""The patch commands: diff, keygen, inspect (offline) and apply, revert, status, history (via the agent).

Exit codes (docs/cli.md): 0 success (patch written / applied / reverted, query answered); 1 refused,
aborted or failed, with the reason on stderr (also: patch not written because of refusals, agent
unreachable, bad patch file); 2 usage error (click's own). With --json every failure prints one JSON
object {"ok": false, "error": "..."} on stdout (an agent's reply, which has both, as it came).

Text from a patch or an agent is untrusted: it is shown through render's escaping, and error messages
are printed as plain text (never as rich markup), so they cannot draw lines of their own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.text import Text

from livepatch.agent import client, protocol
from livepatch.cli import render
from livepatch.errors import LivepatchError
from livepatch.patch import lpatch, signing
from livepatch.patch.limits import MAX_SOURCE_BYTES
from livepatch.patch.model import Category, hook_fix
from livepatch.patch.package import PackageError, build_patch, read_directory, read_git
from livepatch.patch.safetext import printable
from livepatch.runtime.lifecycle import EventName

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)
_CLIENT_GRACE_S = 60.0  # on top of the patch timeout: staging, hooks, a busy patcher thread


def _json_mode() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.params.get("as_json"))


def _fail(message: str, code: int = 1) -> NoReturn:
    """Report a failure and exit: a JSON error object with --json, else "error: ..." on stderr."""
    if _json_mode():
        _print_json({"ok": False, "error": message})
    else:
        _err.print(Text("error: ", style="bold red") + Text(printable(message)))
    sys.exit(code)


def _print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True))


def _ask(socket_path: str, req: protocol.Request, timeout: float) -> protocol.Reply:
    try:
        return client.send(socket_path, req, timeout=timeout)
    except client.AgentUnreachable as exc:
        _fail(str(exc))
    except protocol.ProtocolError as exc:
        _fail(f"bad reply from the agent: {exc}")


socket_option = click.option(
    "--socket",
    "socket_path",
    required=True,
    envvar="LIVEPATCH_SOCKET",
    type=str,  # not click.Path: its readability check would pre-empt the agent's own answer
    help="The agent's control socket (or $LIVEPATCH_SOCKET).",
)
json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print the result as JSON (on failure: {"ok": false, "error": ...}).',
)
method_option = click.option(
    "--method",
    type=click.Choice(protocol.METHODS),
    default="auto",
    show_default=True,
    help="global: everyone parks, one swap; local: each thread moves at its next quiescence point; "
    "auto: local for thread-local patches, else global.",
)
timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0.001, max=protocol.MAX_TIMEOUT_S),
    default=5.0,
    show_default=True,
    help="Seconds to reach quiescence before aborting (nothing changes on abort).",
)
# The escape hatches (docs/cli.md, "revert --force"): options and their checks, kept together.
watch_call_options = (
    click.option(
        "--watch-max-call-ms",
        "max_call_ms",
        type=click.FloatRange(min=0.001, max=protocol.MAX_WATCH_S * 1e3),
        default=None,
        help="With --watch: a call of the patched code that takes longer than MS (or hangs) is slow; "
        "more than --watch-max-slow slow calls roll the patch back, BY FORCE if they still run "
        "(see `revert --force`).",
    ),
    click.option(
        "--watch-max-slow",
        "max_slow_calls",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="With --watch-max-call-ms: how many slow calls are tolerated.",
    ),
)
force_option = click.option(
    "--force",
    is_flag=True,
    help="DANGEROUS: put the old code back for every new call at once, without waiting for quiescence "
    "(--method is ignored). Threads already inside the new code finish in it and then return into the "
    "old code; use it when a revert cannot reach quiescence (the new code hangs).",
)


def _watch_request(
    watch_s: float | None, max_errors: int, max_call_ms: float | None, max_slow_calls: int
) -> protocol.WatchRequest | None:
    if max_call_ms is not None and not watch_s:
        raise click.UsageError(
            "--watch-max-call-ms needs --watch SECONDS (the window it applies to)"
        )
    if not watch_s:
        return None
    return protocol.WatchRequest(watch_s, max_errors, max_call_ms, max_slow_calls)


def _warn_if_forced(reply: protocol.Reply) -> protocol.Reply:
    """A forced revert succeeded: say so loudly on stderr (also with --json), as plain text."""
    if isinstance(reply, protocol.ResultReply):
        forced = next((e for e in reply.result.events if e.name == EventName.FORCED), None)
        if forced is not None:
            _err.print(Text("warning: ", style="bold yellow") + Text(forced.detail))
    return reply


# -- offline ------------------------------------------------------------------------------------------


_DIFF_HELP = """Diff two versions of PACKAGE (directories OLD and NEW holding OLD/PKG/..., or --git) into a patch.

A patch with refusals is not written (exit 1). With --hooks FILE, a refusal is waived only when FILE
defines a hook that covers it (a transform hook for a new instance attribute or a class layout change,
pre_patch or post_patch for changed module-level state, ...: docs/patchability.md); every waived refusal
is listed with its hook. Refusals no hook covers still block.

\b
Examples:
  livepatch diff v1/ v2/ -p kvserver -o fix.lpatch --key keys/livepatch.key -m "fix INCR overflow"
  livepatch diff --git . v1.2 HEAD -p kvserver -o fix.lpatch --key keys/livepatch.key
  livepatch diff v1/ v2/ -p shop --category data --hooks migrate.py -o fix.lpatch
"""


@click.command("diff", help=_DIFF_HELP)
@click.argument(
    "old", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.argument(
    "new", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option("--package", "-p", "package", required=True, help="Package to diff, e.g. kvserver.")
@click.option(
    "--git",
    "git",
    nargs=3,
    type=str,
    default=None,
    metavar="REPO REV_OLD REV_NEW",
    help="Diff two revisions of a git repository instead of two directories (no checkout).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the .lpatch here (nothing is written when there are refusals or no change).",
)
@click.option(
    "--key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Private key to sign with (livepatch keygen); without it the patch is unsigned.",
)
@click.option(
    "--category",
    type=click.Choice([c.value for c in Category]),
    default=None,
    help="thread-local allows local quiescence; process needs global; data carries a transformer. "
    "Default: inferred (thread-local when only function bodies change and nothing shared is "
    "touched); the summary says why.",
)
@click.option(
    "--hooks",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Python module with pre_patch/transform/post_patch/pre_revert/post_revert, stored in the "
    "patch; it waives the refusals its hooks cover.",
)
@click.option(
    "--accept-transformer",
    is_flag=True,
    help="Confirm the generated transform hook that sets new instance attributes on every live "
    "instance (only when the new __init__ gives each a value from globals and self), and replaces a "
    "class whose __slots__ or bases change, rebuilding its live instances (livepatch.migrate); it is "
    "printed and carried as the patch's hooks (category data, global quiescence).",
)
@click.option(
    "--description", "-m", default="", help="What the patch fixes (stored in the manifest)."
)
@click.option("--patch-id", default=None, help="Patch id (default: a short hash of the content).")
@json_option
def diff_command(
    old: Path | None,
    new: Path | None,
    package: str,
    git: tuple[str, str, str] | None,
    output: Path | None,
    key: Path | None,
    category: str | None,
    hooks: Path | None,
    accept_transformer: bool,
    description: str,
    patch_id: str | None,
    as_json: bool,
) -> None:
    if git is not None and (old is not None or new is not None):
        raise click.UsageError(
            "give either OLD NEW directories or --git REPO REV_OLD REV_NEW, not both"
        )
    if git is None and (old is None or new is None):
        raise click.UsageError("give OLD and NEW directories, or --git REPO REV_OLD REV_NEW")
    try:
        signing_key = signing.load_private_key(key) if key else None
        hooks_source = None
        if hooks is not None:
            if hooks.stat().st_size > MAX_SOURCE_BYTES:
                _fail(f"{hooks} is over the limit of {MAX_SOURCE_BYTES} bytes")
            hooks_source = hooks.read_text(encoding="utf-8")
            try:
                compile(hooks_source, str(hooks), "exec")  # the author's error: report it now
            except SyntaxError as exc:
                _fail(f"hooks file {hooks}: {exc}")
        if git is not None:
            repo = Path(git[0])
            old_v, new_v = read_git(repo, git[1], package), read_git(repo, git[2], package)
        else:
            assert old is not None and new is not None
            old_v, new_v = read_directory(old, package), read_directory(new, package)
        pp = build_patch(
            old_v,
            new_v,
            category=Category(category) if category else None,
            description=description,
            hooks_source=hooks_source,
            patch_id=patch_id,
            accept_transformer=accept_transformer,
        )
    except (LivepatchError, PackageError, OSError, UnicodeDecodeError) as exc:
        _fail(str(exc))
    except SyntaxError as exc:
        _fail(f"a module does not compile: {exc}")
    except (RecursionError, MemoryError) as exc:  # CPython's parser gives up on extreme nesting
        _fail(
            f"a module (or the hooks file) is nested too deeply to compile ({type(exc).__name__})"
        )
    spec = pp.spec
    # The differ waived the refusals a hook of the file covers; what remains blocks the patch.
    blocked = bool(spec.refusals)
    empty = spec.changed_count == 0 and not pp.waived
    written = False
    if output is not None and not blocked and not empty:
        try:
            lpatch.write(output, lpatch.build(spec, signing_key))
        except (lpatch.PatchFileError, OSError) as exc:
            _fail(str(exc))
        written = True
    error = None
    if blocked:
        hookable = [r for r in spec.refusals if hook_fix(r.kind)]
        if not hookable:
            how = "change the code as each fix says; no hook can take care of these"
        elif hooks_source is None:
            how = "fix them, or ship --hooks FILE defining the hooks each fix names"
        else:
            how = "fix them, or define in the hooks file the hooks each fix names"
        error = f"{len(spec.refusals)} change(s) cannot be live-patched; no patch written ({how})"
    elif empty:
        error = "no definition changed between the two versions; no patch written"
    if as_json:
        _print_json(
            {
                "ok": error is None,
                "error": error,
                "manifest": spec.to_dict(),
                "modules": [
                    {"module": m.module, "status": m.status, "counts": m.counts} for m in pp.modules
                ],
                "waived": [w.to_dict() for w in pp.waived],
                "category_reason": pp.category_reason,
                "generated_transformer": pp.generated_transformer,
                "written": str(output) if written else None,
                "signed_by": signing_key.key_id if signing_key and written else None,
            }
        )
        if error is not None:
            sys.exit(1)
    else:
        _out.print(render.diff_summary(pp))
        if written:
            signed = f"signed by key {signing_key.key_id}" if signing_key else "UNSIGNED"
            _out.print(Text(f"wrote {printable(output)} ({signed})"))
    if error is not None:
        _fail(error)


@click.command("keygen")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write livepatch.key and livepatch.pub into (created if missing).",
)
def keygen_command(out_dir: Path) -> None:
    """Write OUT/livepatch.key (private, mode 0600) and OUT/livepatch.pub. Never overwrites."""
    try:
        private, public, key_id = signing.generate_keypair(out_dir)
    except (signing.KeyFileError, OSError) as exc:
        _fail(str(exc))
    _out.print(f"private key: {private} (mode 0600; keep it secret)")
    _out.print(f"public key:  {public} (give it to the agents: trusted_keys=[...])")
    _out.print(f"key id:      {key_id}")


@click.command("inspect")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--key",
    "public_keys",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Public key(s) to check the signature against.",
)
@json_option
def inspect_command(file: Path, public_keys: tuple[Path, ...], as_json: bool) -> None:
    """Show what the patch FILE will do, and whether (and by which key) it is signed."""
    try:
        pf = lpatch.read(file)
        keys = [signing.load_public_key(p) for p in public_keys]
    except (lpatch.PatchFileError, signing.KeyFileError) as exc:
        _fail(str(exc))
    signed_by = pf.signature.key_id if pf.signature else None
    verified: bool | None = None
    problem = ""
    if keys and pf.signature is not None:
        try:
            pf.verify(keys)
            verified = True
        except LivepatchError as exc:
            verified, problem = False, str(exc)
    if as_json:
        _print_json(
            {
                "ok": verified is not False,
                "error": problem or None,
                "manifest": pf.manifest,
                "signed": pf.signed,
                "key_id": signed_by,
                "signature_valid": verified,
                "changed": pf.spec.changed_count,
            }
        )
        if verified is False:
            sys.exit(1)
    else:
        _out.print(render.inspect_summary(pf.spec, signed_by, verified))
    if verified is False:
        _fail(problem)


# -- through the agent ----------------------------------------------------------------------------------


def _report(reply: protocol.Reply, as_json: bool) -> None:
    if as_json:
        _print_json(reply.to_wire())  # has "ok" and "error" already
        if not reply.ok:
            sys.exit(1)
        return
    if isinstance(reply, protocol.ResultReply):
        _out.print(render.timeline(reply.result))
        if reply.signed_by:
            _out.print(Text(f"  signed by key {printable(reply.signed_by)}", style="dim"))
    if not reply.ok:
        _fail(reply.error or "failed")


_APPLY_HELP = """Apply the patch FILE to the server behind --socket.

The agent checks the signature, the refusals, the method and every target's fingerprint, then waits
for quiescence (at most --timeout seconds; on timeout nothing changes). If this command is killed
while it waits, the patch still completes or aborts in the server: `livepatch history` shows how.

\b
Examples:
  livepatch apply fix.lpatch --socket /run/kv/livepatch.sock
  livepatch apply fix.lpatch --socket /run/kv/livepatch.sock --method global --timeout 10
  livepatch apply fix.lpatch --socket /run/kv/livepatch.sock --watch 30 --max-errors 0
"""


@click.command("apply", help=_APPLY_HELP)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@socket_option
@method_option
@timeout_option
@watch_call_options[0]
@watch_call_options[1]
@click.option(
    "--watch",
    "watch_s",
    type=click.FloatRange(min=0.001, max=protocol.MAX_WATCH_S),
    default=None,
    help="Watch the patched code for SECONDS after applying; errors above --max-errors roll it back.",
)
@click.option(
    "--max-errors",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="With --watch: how many exceptions escaping the patched code are tolerated.",
)
@json_option
def apply_command(
    file: Path,
    socket_path: str,
    method: str,
    timeout: float,
    watch_s: float | None,
    max_errors: int,
    max_call_ms: float | None,
    max_slow_calls: int,
    as_json: bool,
) -> None:
    try:
        pf = lpatch.read(file)
    except lpatch.PatchFileError as exc:
        _fail(str(exc))
    req = protocol.ApplyRequest(
        pf.to_document(),
        method,
        timeout,
        _watch_request(watch_s, max_errors, max_call_ms, max_slow_calls),
    )
    _report(_ask(socket_path, req, timeout + (watch_s or 0) + _CLIENT_GRACE_S), as_json)


_REVERT_HELP = """Revert the newest applied patch (or PATCH_ID, when no later patch touches its targets).

\b
Examples:
  livepatch revert --socket /run/kv/livepatch.sock
  livepatch revert 3f2a9c1b07de --socket /run/kv/livepatch.sock --method global
"""


@click.command("revert", help=_REVERT_HELP)
@click.argument("patch_id", required=False)
@socket_option
@method_option
@timeout_option
@force_option
@json_option
def revert_command(
    patch_id: str | None, socket_path: str, method: str, timeout: float, force: bool, as_json: bool
) -> None:
    req = protocol.RevertRequest(patch_id, method, timeout, force)
    _report(_warn_if_forced(_ask(socket_path, req, timeout + _CLIENT_GRACE_S)), as_json)


@click.command("status")
@socket_option
@json_option
def status_command(socket_path: str, as_json: bool) -> None:
    """Show the applied patches and which threads run which generation."""
    reply = _ask(socket_path, protocol.StatusRequest(), _CLIENT_GRACE_S)
    if not isinstance(reply, protocol.StatusReply):
        _fail(reply.error or "failed")
    if as_json:
        _print_json(reply.to_wire())
    else:
        _out.print(render.status_text(reply))


@click.command("history")
@socket_option
@json_option
def history_command(socket_path: str, as_json: bool) -> None:
    """Show every patch attempt (applied, reverted, refused, aborted, rolled back), oldest first; with a
    state directory across restarts, per start, with what each start did with the kept patches."""
    reply = _ask(socket_path, protocol.HistoryRequest(), _CLIENT_GRACE_S)
    if not isinstance(reply, protocol.HistoryReply):
        _fail(reply.error or "failed")
    if as_json:
        _print_json(reply.to_wire())
    else:
        _out.print(render.history_view(reply))


COMMANDS = (
    diff_command,
    keygen_command,
    inspect_command,
    apply_command,
    revert_command,
    status_command,
    history_command,
)


def register(group: click.Group) -> None:
    for cmd in COMMANDS:
        group.add_command(cmd)
