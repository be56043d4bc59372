"""Human output of the patch commands (rich): diff summaries, patch contents, timelines, status.

Pure functions from data (dicts as the agent sends them, PatchSpec) to rich renderables or text; the
commands decide where they go. The `--json` outputs carry the same data without formatting.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from livepatch.patch.model import ChangeKind, PatchSpec
from livepatch.patch.package import PackagePatch

_KIND_STYLE = {"changed": "yellow", "added": "green", "removed": "red", "same": "dim"}
# Events that happen once per thread are summarised on one line each.
_PER_THREAD = ("reached", "migrated")


def diff_summary(pp: PackagePatch) -> RenderableType:
    table = Table(
        title=f"patch {pp.spec.patch_id} for package {pp.spec.package}", title_justify="left"
    )
    table.add_column("module")
    table.add_column("status")
    for kind in ChangeKind:
        table.add_column(kind.value, justify="right")
    refused_by_module: dict[str, int] = defaultdict(int)
    for r in pp.spec.refusals:
        refused_by_module[r.module] += 1
    table.add_column("refused", justify="right")
    for m in pp.modules:
        if m.status == "unchanged":
            continue
        table.add_row(
            m.module,
            m.status,
            *(str(m.counts.get(k.value, 0)) for k in ChangeKind),
            str(refused_by_module.get(m.module, 0)),
        )
    unchanged = sum(1 for m in pp.modules if m.status == "unchanged")
    parts: list[RenderableType] = [table, Text(f"{unchanged} module(s) unchanged", style="dim")]
    parts.append(definitions(pp.spec))
    if pp.removed_modules:
        parts.append(
            Text(
                "removed modules (they stay loaded in the server; nothing to patch): "
                + ", ".join(pp.removed_modules),
                style="dim",
            )
        )
    if pp.spec.refusals:
        parts.append(refusals(pp.spec))
    return Group(*parts)


def definitions(spec: PatchSpec) -> RenderableType:
    lines = Text()
    for m in spec.modules:
        for c in m.changes:
            if c.kind is ChangeKind.SAME:
                continue
            lines.append(f"  {c.kind.value:<8}", style=_KIND_STYLE[c.kind.value])
            lines.append(f" {m.module}:{c.qualname}  ({c.definition.value})\n")
    if not lines:
        return Text("no definition changed", style="dim")
    return Group(Text("definitions:", style="bold"), lines)


def refusals(spec: PatchSpec) -> RenderableType:
    text = Text()
    text.append(f"{len(spec.refusals)} change(s) cannot be live-patched:\n", style="bold red")
    for r in spec.refusals:
        text.append(f"  {r.module}:{r.qualname}: ", style="red")
        text.append(f"{r.reason}\n")
        text.append(f"      fix: {r.fix}\n", style="cyan")
    return text


def inspect_summary(
    spec: PatchSpec, signed_by: str | None, verified: bool | None
) -> RenderableType:
    head = Text()
    head.append(f"patch {spec.patch_id}", style="bold")
    head.append(f"  package {spec.package}  category {spec.category.value}\n")
    if spec.description:
        head.append(f"description: {spec.description}\n")
    if signed_by is None:
        head.append(
            "signature: none (unsigned; agents refuse it unless started with allow_unsigned)\n",
            style="yellow",
        )
    else:
        state = {True: "valid", False: "INVALID", None: "not checked (pass --key)"}[verified]
        head.append(
            f"signature: ed25519, key id {signed_by}, {state}\n",
            style="red" if verified is False else "",
        )
    head.append(f"hooks: {'yes' if spec.hooks_source else 'none'}\n")
    table = Table(show_header=True, title="targets", title_justify="left")
    table.add_column("module")
    table.add_column("definition")
    table.add_column("kind")
    table.add_column("change")
    table.add_column("old fingerprint")
    for m in spec.modules:
        for c in m.changes:
            if c.kind is ChangeKind.SAME:
                continue
            table.add_row(
                m.module,
                c.qualname,
                c.definition.value,
                Text(c.kind.value, style=_KIND_STYLE[c.kind.value]),
                (c.old_fingerprint or "-")[:16],
            )
    parts: list[RenderableType] = [head, table]
    if spec.refusals:
        parts.append(refusals(spec))
    return Group(*parts)


def timeline(result: dict[str, Any]) -> Text:
    """A few lines: outcome, then the events in ms since the request, then the timings."""
    out = Text()
    ok = result["outcome"] in ("applied", "reverted")
    out.append(
        f"{result['action']} {result['patch_id']}: {result['outcome']}",
        style="bold green" if ok else "bold red",
    )
    out.append(f" ({result['method']})\n")
    events = result.get("events") or []
    if events:
        t0 = events[0]["t_ns"]
        seen_per_thread: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for e in events:
            if e["name"] in _PER_THREAD:
                seen_per_thread[e["name"]].append(e)
        shown: set[str] = set()
        for e in events:
            name = e["name"]
            if name in _PER_THREAD:
                if name in shown:
                    continue
                shown.add(name)
                group = seen_per_thread[name]
                last = (group[-1]["t_ns"] - t0) / 1e6
                label = "all reached quiescence" if name == "reached" else "all migrated"
                out.append(f"  {last:9.3f} ms  {label} ({len(group)} thread(s))\n")
                continue
            at = (e["t_ns"] - t0) / 1e6
            detail = f"  {e['detail']}" if e.get("detail") and e["detail"] != "agent" else ""
            if name == "refused":
                detail = ""  # the reason follows on its own line
            out.append(f"  {at:9.3f} ms  {name}{detail}\n")
    timings = result.get("timings") or {}
    if timings:
        out.append(
            "  timings: " + ", ".join(f"{k} {v:.3f} ms" for k, v in timings.items()) + "\n",
            style="dim",
        )
    if result.get("reason") and not ok:
        out.append(f"  reason: {result['reason']}\n", style="red")
    return out


def history_table(history: list[dict[str, Any]]) -> Table:
    table = Table(title="patch history (oldest first)", title_justify="left")
    for col in ("patch", "action", "method", "outcome", "sync ms", "total ms", "reason"):
        table.add_column(col)
    for r in history:
        t = r.get("timings") or {}
        table.add_row(
            r["patch_id"],
            r["action"],
            r["method"],
            Text(r["outcome"], style="green" if r["outcome"] in ("applied", "reverted") else "red"),
            f"{t['sync']:.3f}" if "sync" in t else "-",
            f"{t['total']:.3f}" if "total" in t else "-",
            r.get("reason", ""),
        )
    return table


def status_text(reply: dict[str, Any]) -> Text:
    out = Text()
    out.append(f"agent pid {reply['pid']} uid {reply['uid']} on {reply['socket']}\n")
    keys = ", ".join(reply.get("trusted_keys") or []) or "none"
    out.append(
        f"trusted keys: {keys}; unsigned patches "
        f"{'allowed' if reply.get('allow_unsigned') else 'refused'}\n"
    )
    applied = reply.get("applied") or []
    out.append(f"applied patches (oldest first): {', '.join(applied) if applied else 'none'}\n")
    stats = reply.get("statistics")
    if isinstance(stats, dict):
        threads = stats.get("threads") or []
        out.append(
            f"generation {stats.get('generation')}, transition {stats.get('transition') or 'none'}, "
            f"{len(threads)} managed thread(s)\n"
        )
        for key in ("by_generation", "by_state", "by_priority"):
            values = stats.get(key) or {}
            shown = ", ".join(f"{k}: {v}" for k, v in values.items()) or "-"
            out.append(f"  {key.replace('_', ' ')}: {shown}\n")
    elif stats is not None:
        out.append(f"  {stats}\n")
    return out
