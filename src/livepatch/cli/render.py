"""Human output of the patch commands (rich): diff summaries, patch contents, timelines, status.

Pure functions from data (dicts as the agent sends them, PatchSpec) to rich renderables or text; the
commands decide where they go. The `--json` outputs carry the same data without formatting.

Every string that comes from a patch or from the agent (ids, descriptions, names, reasons, event details)
is untrusted: it goes through `printable()` (livepatch.patch.safetext) and into rich `Text` objects, never
into markup, so it can neither move the cursor nor draw styled lines of its own.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from livepatch.agent import state_dir as sd
from livepatch.agent.protocol import HistoryReply, StatusReply
from livepatch.patch.model import ChangeKind, PatchSpec
from livepatch.patch.package import PackagePatch
from livepatch.patch.safetext import printable as p
from livepatch.runtime.lifecycle import Event, EventName, PatchResult

_KIND_STYLE = {"changed": "yellow", "added": "green", "removed": "red", "same": "dim"}
# Events that happen once per thread are summarised on one line each.
_PER_THREAD = (EventName.REACHED, EventName.MIGRATED)


def diff_summary(pp: PackagePatch) -> RenderableType:
    table = Table(
        title=Text(f"patch {p(pp.spec.patch_id)} for package {p(pp.spec.package)}"),
        title_justify="left",
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
            Text(p(m.module)),
            m.status,
            *(str(m.counts.get(k.value, 0)) for k in ChangeKind),
            str(refused_by_module.get(m.module, 0)),
        )
    unchanged = sum(1 for m in pp.modules if m.status == "unchanged")
    parts: list[RenderableType] = [table, Text(f"{unchanged} module(s) unchanged", style="dim")]
    if pp.category_reason:
        parts.append(Text(p(f"category {pp.spec.category.value}: {pp.category_reason}")))
    if pp.generated_transformer:
        parts.append(
            Group(
                Text("generated transformer (confirmed with --accept-transformer):", style="bold"),
                Text(pp.generated_transformer.strip()),
            )
        )
    parts.append(definitions(pp.spec))
    if pp.removed_modules:
        parts.append(
            Text(
                "removed modules (they stay loaded in the server; nothing to patch): "
                + ", ".join(map(p, pp.removed_modules)),
                style="dim",
            )
        )
    if pp.waived:
        parts.append(waivers(pp))
    if pp.spec.refusals:
        parts.append(refusals(pp.spec))
    return Group(*parts)


def waivers(pp: PackagePatch) -> Text:
    text = Text()
    text.append(
        f"{len(pp.waived)} refusal(s) waived: the hooks file takes care of them:\n",
        style="bold yellow",
    )
    for w in pp.waived:
        r = w.refusal
        text.append(f"  {p(r.module)}:{p(r.qualname)}: ", style="yellow")
        text.append(f"{p(r.reason)}\n")
        text.append(f"      covered by hook: {p(w.hook)}\n", style="cyan")
    return text


def definitions(spec: PatchSpec) -> RenderableType:
    lines = Text()
    for m in spec.modules:
        for c in m.changes:
            if c.kind is ChangeKind.SAME:
                continue
            lines.append(f"  {c.kind.value:<8}", style=_KIND_STYLE[c.kind.value])
            lines.append(f" {p(m.module)}:{p(c.qualname)}  ({c.definition.value})\n")
    if not lines:
        return Text("no definition changed", style="dim")
    return Group(Text("definitions:", style="bold"), lines)


def refusals(spec: PatchSpec) -> RenderableType:
    text = Text()
    text.append(f"{len(spec.refusals)} change(s) cannot be live-patched:\n", style="bold red")
    for r in spec.refusals:
        text.append(f"  {p(r.module)}:{p(r.qualname)}: ", style="red")
        text.append(f"{p(r.reason)}\n")
        text.append(f"      fix: {p(r.fix)}\n", style="cyan")
    return text


def inspect_summary(
    spec: PatchSpec, signed_by: str | None, verified: bool | None
) -> RenderableType:
    head = Text()
    head.append(f"patch {p(spec.patch_id)}", style="bold")
    head.append(f"  package {p(spec.package)}  category {spec.category.value}\n")
    if spec.description:
        head.append(f"description: {p(spec.description)}\n")
    if signed_by is None:
        head.append(
            "signature: none (unsigned; agents refuse it unless started with allow_unsigned)\n",
            style="yellow",
        )
    else:
        state = {True: "valid", False: "INVALID", None: "not checked (pass --key)"}[verified]
        head.append(
            f"signature: ed25519, key id {p(signed_by)}, {state}\n",
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
                Text(p(m.module)),
                Text(p(c.qualname)),
                c.definition.value,
                Text(c.kind.value, style=_KIND_STYLE[c.kind.value]),
                (c.old_fingerprint or "-")[:16],
            )
    parts: list[RenderableType] = [head, table]
    if spec.refusals:
        parts.append(refusals(spec))
    return Group(*parts)


def timeline(result: PatchResult) -> Text:
    """A few lines: outcome, then the events in ms since the request, then the timings."""
    out = Text()
    out.append(
        f"{p(result.action.value)} {p(result.patch_id)}: {p(result.outcome.value)}",
        style="bold green" if result.ok else "bold red",
    )
    out.append(f" ({p(result.method)})\n")
    events = result.events
    if events:
        t0 = events[0].t_ns
        seen_per_thread: dict[EventName, list[Event]] = defaultdict(list)
        for e in events:
            if e.name in _PER_THREAD:
                seen_per_thread[e.name].append(e)
        shown: set[EventName] = set()
        for e in events:
            name = e.name
            if name in _PER_THREAD:
                if name in shown:
                    continue
                shown.add(name)
                group = seen_per_thread[name]
                last = (group[-1].t_ns - t0) / 1e6
                label = "all reached quiescence" if name == EventName.REACHED else "all migrated"
                out.append(f"  {last:9.3f} ms  {label} ({len(group)} thread(s))\n")
                continue
            at = (e.t_ns - t0) / 1e6
            detail = f"  {p(e.detail)}" if e.detail and e.detail != "agent" else ""
            if name == EventName.REFUSED:
                detail = ""  # the reason follows on its own line
            out.append(f"  {at:9.3f} ms  {p(name)}{detail}\n")
    if result.timings:
        out.append(
            "  timings: " + ", ".join(f"{k} {v:.3f} ms" for k, v in result.timings.items()) + "\n",
            style="dim",
        )
    if result.reason and not result.ok:
        out.append(f"  reason: {p(result.reason)}\n", style="red")
    return out


def history_view(reply: HistoryReply) -> RenderableType:
    """The history; with a state directory, one section per start of the server: when, which process,
    what its restore did with the kept patches, then its attempts."""
    if not reply.starts:
        if not reply.dropped:
            return history_table(reply.history)
        return Group(_dropped_line(reply.dropped), history_table(reply.history))
    by_start: dict[int, list[PatchResult]] = defaultdict(list)
    for r, start in zip(reply.history, reply.entry_starts, strict=False):
        by_start[start].append(r)
    parts: list[RenderableType] = []
    for st in reply.starts:
        number = st.get("start")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(st.get("started_at") or 0)))
        refused = st.get("outcome") == sd.REFUSED
        head = Text(f"start {p(number)}: pid {p(st.get('pid'))}, {when}", style="bold")
        if refused:
            head.append("  REFUSED TO START (stale patches)", style="bold red")
        parts.append(head)
        for note in st.get("restore") or []:
            outcome = str(note.get("outcome"))
            style = _RESTORE_STYLE.get(outcome, "")
            line = Text("  kept patch ")
            line.append(p(note.get("patch_id")))
            line.append(f" {p(outcome)}", style=style)
            if note.get("detail"):
                line.append(f": {p(note.get('detail'))}")
            parts.append(line)
        if st.get("dropped"):
            parts.append(_dropped_line(int(st["dropped"])))
        entries = by_start.get(int(number or 0), [])
        if entries:
            parts.append(history_table(entries, title=""))
        elif not refused:
            parts.append(Text("  no patch attempts", style="dim"))
    return Group(*parts)


def _dropped_line(dropped: int) -> Text:
    return Text(
        f"  {dropped:,} older attempts dropped (the server keeps the newest; its metrics count all)",
        style="dim",
    )


_RESTORE_STYLE = {
    sd.REAPPLIED: "green",
    sd.INCLUDED: "green",
    sd.KEPT: "green",
    sd.STALE: "red",
    sd.DROPPED: "red",
}


def history_table(
    history: Sequence[PatchResult], title: str = "patch history (oldest first)"
) -> Table:
    table = Table(title=title or None, title_justify="left")
    for col in ("patch", "action", "method", "outcome", "sync ms", "total ms", "reason"):
        table.add_column(col)
    for r in history:
        t = r.timings
        table.add_row(
            Text(p(r.patch_id)),
            Text(p(r.action.value)),
            Text(p(r.method)),
            Text(p(r.outcome.value), style="green" if r.ok else "red"),
            f"{t['sync']:.3f}" if "sync" in t else "-",
            f"{t['total']:.3f}" if "total" in t else "-",
            Text(p(r.reason)),
        )
    return table


def status_text(reply: StatusReply) -> Text:
    out = Text()
    out.append(f"agent pid {reply.pid} uid {reply.uid} on {p(reply.socket)}\n")
    keys = ", ".join(map(p, reply.trusted_keys)) or "none"
    out.append(
        f"trusted keys: {keys}; unsigned patches "
        f"{'allowed' if reply.allow_unsigned else 'refused'}\n"
    )
    applied = reply.applied
    out.append(
        f"applied patches (oldest first): {', '.join(map(p, applied)) if applied else 'none'}\n"
    )
    stats = reply.statistics
    threads = stats.get("threads") or []
    out.append(
        f"generation {stats.get('generation')}, transition {stats.get('transition') or 'none'}, "
        f"{len(threads)} managed thread(s)\n"
    )
    for key in ("by_generation", "by_state", "by_priority"):
        values = stats.get(key) or {}
        shown = ", ".join(f"{p(k)}: {p(v)}" for k, v in values.items()) or "-"
        out.append(f"  {key.replace('_', ' ')}: {shown}\n")
    return out
