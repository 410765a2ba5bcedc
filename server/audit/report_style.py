"""The auditor's report's stylesheet, inline in the page (no network, no web fonts).

Fonts are the ones a machine already has; tables carry the detail, charts only the shape. The print
rules keep sections and table rows from splitting across pages and repeat table headers.
"""

CSS = """
:root {
  --ink: #1c2430; --muted: #5d6b7a; --rule: #d9dee5; --soft: #f4f6f8; --accent: #1f4e79;
  --allow: #2f7d5b; --deny: #b83a3a; --approval: #c98a1b; --error: #7b8794;
}
* { box-sizing: border-box; }
html { background: #e9ecef; }
body {
  margin: 0; color: var(--ink);
  font: 14px/1.5 "Inter", "Helvetica Neue", "Segoe UI", "Liberation Sans", "DejaVu Sans", Arial, sans-serif;
  -webkit-font-smoothing: antialiased;
}
.page { max-width: 1120px; margin: 32px auto; background: #fff; padding: 48px 56px 40px;
        box-shadow: 0 1px 3px rgba(0,0,0,.08), 0 8px 24px rgba(0,0,0,.06); }
header.title { border-bottom: 3px solid var(--accent); padding-bottom: 20px; margin-bottom: 24px; }
.eyebrow { text-transform: uppercase; letter-spacing: .12em; font-size: 11px; color: var(--accent);
           font-weight: 600; }
h1 { font-family: "Georgia", "DejaVu Serif", "Liberation Serif", serif; font-weight: 600; font-size: 30px;
     margin: 6px 0 16px; letter-spacing: -.01em; }
h2 { font-family: "Georgia", "DejaVu Serif", "Liberation Serif", serif; font-weight: 600; font-size: 20px;
     margin: 0 0 4px; padding-top: 8px; }
h3 { font-size: 13px; font-weight: 600; margin: 16px 0 2px; color: var(--ink); }
dl.meta { display: grid; grid-template-columns: repeat(4, 1fr); gap: 12px 24px; margin: 0; }
dl.meta dt { font-size: 11px; text-transform: uppercase; letter-spacing: .08em; color: var(--muted); }
dl.meta dd { margin: 2px 0 0; font-weight: 500; overflow-wrap: anywhere; }
section { margin: 32px 0 0; page-break-inside: auto; }
p.lead { color: var(--muted); margin: 0 0 14px; }
.verdict { border-radius: 6px; padding: 14px 18px; margin: 0 0 8px; border: 1px solid; }
.verdict p { margin: 4px 0 0; }
.verdict-title { font-weight: 700; font-size: 15px; }
.verdict.intact { background: #eef7f2; border-color: #b9dcc9; }
.verdict.intact .verdict-title { color: var(--allow); }
.verdict.broken { background: #fbeaea; border: 2px solid var(--deny); }
.verdict.broken .verdict-title { color: var(--deny); font-size: 20px; text-transform: uppercase;
                                 letter-spacing: .04em; }
.figures { display: grid; grid-template-columns: repeat(4, 1fr); gap: 12px; margin: 14px 0 18px; }
.figure { border: 1px solid var(--rule); border-radius: 6px; padding: 12px 14px; border-top: 4px solid var(--rule); }
.figure .value { font-size: 26px; font-weight: 600; font-variant-numeric: tabular-nums; }
.figure .name { color: var(--muted); font-size: 12px; }
.figure.allow { border-top-color: var(--allow); }
.figure.deny { border-top-color: var(--deny); }
.figure.approval_required { border-top-color: var(--approval); }
.figure.error { border-top-color: var(--error); }
ul.findings { margin: 0; padding: 12px 16px 12px 34px; background: var(--soft); border-radius: 6px; }
ul.findings li { margin: 3px 0; }
ul.notes { color: var(--muted); font-size: 12px; margin: 8px 0 0; }
table { width: 100%; border-collapse: collapse; font-size: 12.5px; margin: 8px 0 0; }
thead { display: table-header-group; }
th { text-align: left; font-weight: 600; color: var(--muted); font-size: 11px; text-transform: uppercase;
     letter-spacing: .05em; border-bottom: 2px solid var(--rule); padding: 6px 8px; vertical-align: bottom; }
td { border-bottom: 1px solid var(--rule); padding: 6px 8px; vertical-align: top; overflow-wrap: anywhere; }
tr { page-break-inside: avoid; }
tbody tr:nth-child(even) td { background: #fafbfc; }
.nowrap { white-space: nowrap; }
table.grouped tbody tr td { background: #fff; border-bottom-color: #eef1f4; }
table.grouped tr.group-start td { border-top: 1px solid var(--rule); }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.facts { width: auto; min-width: 60%; }
table.facts th { text-transform: none; letter-spacing: 0; font-size: 12.5px; color: var(--ink);
                 border-bottom: 1px solid var(--rule); width: 220px; vertical-align: top; }
code { font-family: "JetBrains Mono", "DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace;
       font-size: 11.5px; background: var(--soft); padding: 1px 4px; border-radius: 3px; }
td code { word-break: break-word; }
.muted { color: var(--muted); }
.flag { color: var(--deny); font-weight: 600; }
.tag { display: inline-block; font-size: 11px; font-weight: 600; padding: 1px 7px; border-radius: 10px;
       color: #fff; white-space: nowrap; }
.tag.allow { background: var(--allow); } .tag.deny { background: var(--deny); }
.tag.approval_required { background: var(--approval); } .tag.error { background: var(--error); }
.legend { display: flex; gap: 18px; font-size: 12px; color: var(--muted); margin: 0 0 6px; }
.legend .swatch { display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin-right: 6px;
                  vertical-align: -1px; }
svg.chart { width: 100%; height: auto; display: block; margin: 4px 0 8px; }
svg .grid { stroke: #eceff3; stroke-width: 1; }
svg .baseline { stroke: #9aa5b1; stroke-width: 1; }
svg .axis { fill: var(--muted); font-size: 11px; font-family: inherit; }
svg .label { fill: var(--ink); font-size: 12px; font-family: inherit; }
svg .value { fill: var(--muted); font-size: 11px; font-family: inherit; }
p.empty, section.nothing p { color: var(--muted); font-style: italic; }
p.note { color: var(--muted); font-size: 12px; }
footer { margin-top: 40px; padding-top: 12px; border-top: 1px solid var(--rule); color: var(--muted);
         font-size: 11.5px; }
@media print {
  html { background: #fff; }
  .page { box-shadow: none; margin: 0; max-width: none; padding: 0; }
  section { break-inside: auto; } h2, p.lead, .legend { break-after: avoid; }
  #summary, #activity, .verdict, svg.chart, .figures { break-inside: avoid; }
  @page { margin: 16mm 14mm; }
}
"""
