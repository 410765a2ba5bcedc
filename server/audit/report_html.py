"""Render a `Report` as one self-contained HTML page: inline CSS and SVG, no script, no network.

The page is laid out like a document an auditor files: a title block, the verification verdict at
the top (loud when the chain is broken), summary figures, then one section per question with a table
behind every chart. It prints on A4 or Letter as it shows on screen. Everything from the trail is
escaped: agent names, SQL and reasons are written by agents.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape

import server
from server.audit.charts import DECISION_LABELS, horizontal_bars, legend, stacked_bars
from server.audit.event import StoredEvent
from server.audit.report import Report, pii_rows, timeline_series
from server.audit.report_style import CSS

MAX_SQL = 400


def _time(moment: datetime | None, *, seconds: bool = False) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def _n(value: int) -> str:
    return f"{value:,}"


def _sql(stored: StoredEvent) -> str:
    sql = stored.event.arguments.get("sql") if isinstance(stored.event.arguments, dict) else None
    if not isinstance(sql, str) or not sql.strip():
        return '<span class="muted">—</span>'
    text = " ".join(sql.split())
    shown = text if len(text) <= MAX_SQL else text[:MAX_SQL] + " …"
    return f'<code title="{escape(text[:2000])}">{escape(shown)}</code>'


def _table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    numeric: Sequence[int] = (),
    nowrap: Sequence[int] = (),
    group_first: bool = False,
) -> str:
    """Headers are plain text; cells are HTML already escaped by the caller. With `group_first`, a
    first cell equal to the row above's is left blank, so rows read as groups."""

    def cls(i: int) -> str:
        names = [n for n, on in (("num", i in numeric), ("nowrap", i in nowrap)) if on]
        return f' class="{" ".join(names)}"' if names else ""

    head = "".join(f"<th{cls(i)}>{escape(h)}</th>" for i, h in enumerate(headers))
    body, previous = [], None
    for row in rows:
        row = list(row)
        starts = not group_first or row[0] != previous
        if group_first:
            previous, row[0] = row[0], row[0] if starts else ""
        cells = "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(row))
        body.append(f'<tr class="group-start">{cells}</tr>' if group_first and starts else f"<tr>{cells}</tr>")
    if not body:
        return ""
    grouped = ' class="grouped"' if group_first else ""
    return f"<table{grouped}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _decision(decision: str) -> str:
    return f'<span class="tag {escape(decision)}">{escape(DECISION_LABELS.get(decision, decision))}</span>'


def _overflow(report: Report, kind: str) -> str:
    more = report.overflow.get(kind, 0)
    if not more:
        return ""
    return (
        f'<p class="note">…and {_n(more)} more, not listed here; '
        "<code>bastion audit export --format csv</code> has every one.</p>"
    )


def _section(anchor: str, title: str, lead: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2><p class="lead">{lead}</p>{body}</section>'


def _verdict(report: Report) -> str:
    v = report.verification
    if v.broken is not None:
        return (
            '<div class="verdict broken"><div class="verdict-title">Audit trail BROKEN — do not rely on this '
            f"record</div><p>The hash chain does not hold <strong>at sequence {v.broken.sequence}</strong>: "
            f"{escape(v.broken.reason)}.</p><p>Someone changed, deleted, inserted or reordered events, or "
            "rewrote them. Run <code>bastion audit verify</code>, preserve the store as evidence, and "
            "investigate before using any figure below.</p></div>"
        )
    notes = "".join(f"<li>{escape(line)}</li>" for line in v.unchecked[:5])
    return (
        f'<div class="verdict intact"><div class="verdict-title">Audit trail verified</div><p>'
        f"{escape(v.summary().removeprefix('audit chain intact: ').capitalize())}; the hash chain is unbroken"
        f" and ends at the recorded head (event {v.head.sequence}).</p>"
        + (f'<ul class="notes">{notes}</ul>' if notes else "")
        + "</div>"
    )


def _figures(report: Report) -> str:
    unmasked = sorted({p.column for p in report.pii.values() if p.unmasked_calls})
    cards = [
        ("Calls", _n(report.calls), ""),
        ("Agents", _n(len(report.agents)), ""),
        ("Allowed", _n(report.decisions.get("allow", 0)), "allow"),
        ("Denied", _n(report.decisions.get("deny", 0)), "deny"),
        ("Needed approval", _n(report.decisions.get("approval_required", 0)), "approval_required"),
        ("Failed", _n(report.decisions.get("error", 0)), "error"),
        ("Writes run", _n(len(report.writes) + report.overflow.get("writes", 0)), ""),
        ("PII columns seen unmasked", _n(len(unmasked)), "deny" if unmasked else ""),
    ]
    return (
        '<div class="figures">'
        + "".join(
            f'<div class="figure {cls}"><div class="value">{value}</div><div class="name">{escape(name)}</div></div>'
            for name, value, cls in cards
        )
        + "</div>"
    )


def _findings(report: Report) -> str:
    items = []
    clear: dict[str, list[str]] = {}
    for access in pii_rows(report):
        if access.unmasked_calls:
            clear.setdefault(access.column, []).append(access.agent)
    if clear:
        for column, agents in clear.items():
            who = ", ".join(f"<strong>{escape(a)}</strong>" for a in agents)
            items.append(f"<li><code>{escape(column)}</code> was seen <em>unmasked</em> by {who}.</li>")
    elif report.pii:
        items.append("<li>Every PII column read in the period was masked; no agent saw one in the clear.</li>")
    writes = report.writes
    if writes:
        approvers = sorted({w.event.approver for w in writes if w.event.approver})
        unapproved = sum(1 for w in writes if not w.event.approver)
        line = f"{_n(len(writes))} write(s) ran"
        if approvers:
            line += ", approved by " + ", ".join(f"<strong>{escape(a)}</strong>" for a in approvers)
        if unapproved:
            line += f"; <strong>{_n(unapproved)} without a recorded approver</strong>"
        items.append(f"<li>{line}.</li>")
    decided = report.approver_decisions
    if decided:
        granted = sum(1 for d in decided if d.event.tool == "(approve)" and d.event.decision == "allow")
        deciders = sorted({d.event.approver for d in decided if d.event.approver})
        who = ", ".join(f"<strong>{escape(a)}</strong>" for a in deciders)
        items.append(f"<li>{_n(len(decided))} approval decision(s) by {who}: {_n(granted)} approved.</li>")
    denied = report.decisions.get("deny", 0) + report.decisions.get("approval_required", 0)
    if denied:
        items.append(f"<li>{_n(denied)} call(s) were refused or held for approval; each is listed below.</li>")
    return f'<ul class="findings">{"".join(items)}</ul>' if items else ""


def _agents(report: Report) -> str:
    agents = sorted(report.agents.values(), key=lambda a: -a.calls)
    chart = horizontal_bars([(a.agent, a.decisions) for a in agents[:25]])
    rows = [
        [
            escape(a.agent),
            _n(a.calls),
            _n(a.decisions.get("allow", 0)),
            _n(a.decisions.get("deny", 0)),
            _n(a.decisions.get("approval_required", 0)),
            _n(a.decisions.get("error", 0)),
            _n(a.rows),
            "<br>".join(escape(c) for c in sorted(a.unmasked)) or '<span class="muted">none</span>',
            _n(len(a.masked)),
            _time(a.last_seen),
        ]
        for a in agents
    ]
    headers = ["Agent", "Calls", "Allowed", "Denied", "Approval", "Failed", "Rows"]
    headers += ["PII unmasked", "PII masked", "Last"]
    return chart + _table(headers, rows, numeric=(1, 2, 3, 4, 5, 6, 8), nowrap=(0, 9))


def _tables(report: Report) -> str:
    tables = sorted(report.tables.values(), key=lambda t: -(t.reads + t.writes + t.refused))
    rows = [
        [
            f"<code>{escape(t.table)}</code>",
            _n(t.reads),
            _n(t.writes),
            _n(t.refused),
            _n(t.rows),
            ", ".join(escape(a) for a in sorted(t.agents)),
        ]
        for t in tables
    ]
    return _table(["Table", "Reads", "Writes", "Refused", "Rows", "Agents"], rows, numeric=(1, 2, 3, 4))


def _pii(report: Report) -> str:
    rows = []
    for p in pii_rows(report):
        clear = f'<span class="flag">{_n(p.unmasked_calls)} calls · {_n(p.rows_unmasked)} rows</span>'
        rows.append(
            [
                f"<code>{escape(p.column)}</code>",
                escape(p.agent),
                clear if p.unmasked_calls else '<span class="muted">—</span>',
                f"{_n(p.masked_calls)} calls · {_n(p.rows_masked)} rows" if p.masked_calls else "—",
                "; ".join(escape(x) for x in sorted(p.purposes)[:3]) or '<span class="muted">none given</span>',
                _time(p.last_seen),
            ]
        )
    headers = ["PII column", "Agent", "Seen unmasked", "Seen masked", "Purposes given", "Last"]
    return (
        _table(headers, rows, nowrap=(1, 2, 3, 5), group_first=True)
        or '<p class="empty">No PII column was read in this period.</p>'
    )


def _denials(report: Report) -> str:
    rows = [
        [
            _time(s.event.time, seconds=True),
            escape(s.event.agent_id or "—"),
            _decision(s.event.decision),
            _sql(s),
            escape("; ".join(s.event.reasons) or s.event.error or "—"),
            escape(", ".join(s.event.policy_ids) or "—"),
        ]
        for s in report.denials
    ]
    table = _table(["Time (UTC)", "Agent", "Decision", "Statement", "Reason", "Policy"], rows, nowrap=(0, 1, 2, 5))
    return (table or '<p class="empty">Nothing was refused in this period.</p>') + _overflow(report, "denials")


def _approver_decisions(report: Report) -> str:
    rows = []
    for s in report.approver_decisions:
        event = s.event
        approved = event.tool == "(approve)" and event.decision == "allow"
        verdict = '<span class="tag allow">approved</span>' if approved else '<span class="tag deny">denied</span>'
        if event.error or (event.tool == "(approve)" and not approved):
            verdict = '<span class="tag error">refused</span>'
        rows.append(
            [
                _time(event.time, seconds=True),
                f"<strong>{escape(event.approver or '—')}</strong>",
                verdict,
                f"<code>{escape(event.approval_id or '—')}</code>",
                escape(event.agent_id or "—"),
                _sql(s),
                escape("; ".join(event.reasons) or "—"),
            ]
        )
    headers = ["Time (UTC)", "Approver", "Decision", "Approval", "Requested by", "Statement", "Note"]
    return _table(headers, rows, nowrap=(0, 1, 2, 3, 4))


def _approvals(report: Report) -> str:
    decided = _approver_decisions(report)
    ran = _ran_under_approval(report)
    if not decided and not ran:
        return '<p class="empty">No approval was decided or used in this period.</p>'
    parts = []
    if decided:
        parts.append("<h3>Decisions by approvers</h3>" + decided + _overflow(report, "approver_decisions"))
    if ran:
        parts.append("<h3>Calls that ran under an approval</h3>" + ran)
    return "".join(parts)


def _ran_under_approval(report: Report) -> str:
    rows = [
        [
            _time(s.event.time, seconds=True),
            escape(s.event.agent_id or "—"),
            f"<code>{escape(s.event.approval_id or '—')}</code>",
            f"<strong>{escape(s.event.approver)}</strong>" if s.event.approver else '<span class="flag">none</span>',
            _sql(s),
            _decision(s.event.decision),
            _n(s.event.row_count) if s.event.row_count is not None else "—",
        ]
        for s in report.approvals
    ]
    headers = ["Time (UTC)", "Agent", "Approval", "Approved by", "Statement", "Outcome", "Rows"]
    table = _table(headers, rows, numeric=(6,), nowrap=(0, 1, 2, 3, 5))
    return table + (_overflow(report, "approvals") if table else "")


def _writes(report: Report) -> str:
    rows = [
        [
            _time(s.event.time, seconds=True),
            escape(s.event.agent_id or "—"),
            escape((s.event.statement_kind or "").upper()),
            "<br>".join(f"<code>{escape(t)}</code>" for t in s.event.tables) or "—",
            _n(s.event.row_count) if s.event.row_count is not None else "—",
            f"<strong>{escape(s.event.approver)}</strong>" if s.event.approver else '<span class="flag">none</span>',
            _sql(s),
        ]
        for s in report.writes
    ]
    headers = ["Time (UTC)", "Agent", "Kind", "Tables", "Rows", "Approved by", "Statement"]
    table = _table(headers, rows, numeric=(4,), nowrap=(0, 1, 2, 3, 5))
    return (table or '<p class="empty">No write ran in this period.</p>') + _overflow(report, "writes")


def _verification(report: Report) -> str:
    v = report.verification
    start = "the first event (genesis)" if v.start.sequence == 0 else f"the checkpoint of event {v.start.sequence}"
    rows = [
        [
            "Result",
            "<strong>intact</strong>" if v.intact else f'<span class="flag">BROKEN {escape(str(v.broken))}</span>',
        ],
        ["Events verified", _n(v.events)],
        ["Verified from", escape(start)],
        ["Recorded chain head", f"event {v.head.sequence} · <code>{escape(v.head.hash[:16])}…</code>"],
        ["Checkpoints in the trail", f"{_n(v.checkpoints)} ({_n(v.signed_checkpoints)} signature(s) verified)"],
        ["Time taken", f"{v.seconds:.2f} s"],
    ]
    notes = "".join(f"<li>{escape(line)}</li>" for line in v.unchecked)
    table = "<table class='facts'><tbody>" + "".join(f"<tr><th>{k}</th><td>{c}</td></tr>" for k, c in rows)
    return table + "</tbody></table>" + (f'<ul class="notes">{notes}</ul>' if notes else "")


def render_report(report: Report, *, title: str = "Database access audit report") -> str:
    period = f"{_time(report.period_start)} — {_time(report.period_end)} UTC"
    if report.period_start is None:
        period = "the whole trail (empty)"
    meta = [
        ("Period", escape(period)),
        ("Audit store", escape(report.store or "—")),
        ("Generated", escape(_time(report.generated_at, seconds=True)) + " UTC"),
        ("Produced by", f"Bastion {escape(server.__version__)}"),
    ]
    header = (
        f'<header class="title"><div class="eyebrow">Bastion · access review evidence</div><h1>{escape(title)}</h1>'
        '<dl class="meta">' + "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in meta) + "</dl></header>"
    )
    parts = [header, _verdict(report)]
    if report.unreadable:
        listed = ", ".join(str(n) for n in report.unreadable[:20])
        parts.append(
            f'<div class="verdict broken"><p><strong>{_n(len(report.unreadable))} record(s) in this period could '
            f"not be read</strong> (edited by hand) and are left out of every figure below: sequence {listed}"
            f"{' …' if len(report.unreadable) > 20 else ''}.</p></div>"
        )
    if report.empty:
        parts.append(
            '<section class="nothing"><h2>No activity</h2><p class="lead">No tool calls were recorded in '
            f"this period ({escape(period)}). Nothing was read, refused, approved or written through Bastion.</p>"
            "</section>"
        )
    else:
        series = timeline_series(report)
        parts += [
            '<section id="summary"><h2>Summary</h2>' + _figures(report) + _findings(report) + "</section>",
            _section(
                "activity",
                "Activity over time",
                f"Tool calls per {report.bucket} (UTC), by decision.",
                legend() + stacked_bars(series, report.bucket),
            ),
            _section("agents", "Access by agent", "Who called, with what outcome, and what each saw.", _agents(report)),
            _section("tables", "Access by table", "Allowed reads and writes per table, and refusals.", _tables(report)),
            _section(
                "pii",
                "Personal data by column",
                "Each PII column an allowed call returned, per agent: seen in the clear (highlighted) or only "
                "masked. Rows are the rows those calls returned.",
                _pii(report),
            ),
            _section(
                "denials",
                "Refused calls",
                "Every call policy refused or held for approval, with its reason.",
                _denials(report),
            ),
            _section(
                "approvals",
                "Approvals",
                "Every approval decided in the period, and every call that ran under one, with its approver.",
                _approvals(report),
            ),
            _section("writes", "Writes", "Every write that ran, its row count and its approver.", _writes(report)),
        ]
    parts.append(
        _section(
            "chain",
            "Integrity of the record",
            "The whole trail, re-hashed while this report was made.",
            _verification(report),
        )
    )
    bookkeeping = ", ".join(f"{_n(n)} {escape(tool)}" for tool, n in sorted(report.bookkeeping.items()))
    footer = (
        "<footer>Figures count tool calls only"
        + (f" (the period also holds {bookkeeping} events)" if bookkeeping else "")
        + ". Times are UTC. Values from rows are never recorded in the audit trail; this report holds none.</footer>"
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · {escape(period)}</title><style>{CSS}</style></head>"
        f'<body><main class="page">{"".join(parts)}{footer}</main></body></html>'
    )
