"""The HTML of the plugin's page, from ``opsassist.platform_status.snapshot``: pure functions,
every value escaped. Shown in a frame of Airflow's UI, so links to Airflow pages are relative to
``/knowledge/`` and open in the top window; the buttons post JSON to ``api/...`` (relative)."""

from __future__ import annotations

import datetime as dt
import json
from html import escape
from typing import Any
from urllib.parse import quote

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1a202c;
       margin: 0; padding: 16px 20px; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 22px 0 8px; }
.who { color: #4a5568; margin-bottom: 8px; }
table { border-collapse: collapse; width: 100%; margin-bottom: 6px; }
th, td { border-bottom: 1px solid #e2e8f0; padding: 6px 8px; text-align: left;
         vertical-align: top; }
th { background: #f7fafc; font-weight: 600; font-size: 13px; }
code { font-size: 12.5px; background: #f1f5f9; padding: 1px 4px; border-radius: 3px; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
         font-weight: 600; }
.ok { background: #c6f6d5; color: #22543d; } .bad { background: #fed7d7; color: #822727; }
.warn { background: #fefcbf; color: #744210; } .muted { color: #718096; }
.unavailable { background: #fff5f5; border: 1px solid #feb2b2; color: #822727;
               padding: 8px 10px; border-radius: 4px; margin: 6px 0; }
.metrics td, .metrics th { border: none; padding: 1px 10px 1px 0; font-size: 12.5px; }
button { font: inherit; padding: 3px 10px; border-radius: 4px; border: 1px solid #a0aec0;
         background: #edf2f7; cursor: pointer; }
button.danger { border-color: #c53030; color: #c53030; background: #fff5f5; }
button.go { border-color: #2f855a; color: #22543d; background: #f0fff4; }
button:disabled { opacity: .5; cursor: not-allowed; }
input[type=text] { font: inherit; padding: 2px 6px; width: 170px; }
#result { margin: 8px 0; min-height: 1.4em; font-weight: 600; }
#confirm:not(:empty) { margin: 8px 0; padding: 8px 10px; background: #fffaf0;
                       border: 1px solid #f6ad55; border-radius: 4px; }
"""

SCRIPT = """
async function post(url, body) {
  const out = document.getElementById('result');
  out.textContent = 'working...';
  const response = await fetch(url, {method: 'POST', credentials: 'same-origin',
    headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
  const data = await response.json().catch(() => ({}));
  out.textContent = response.ok ? (data.text || ('done: ' + (data.from || '') + ' -> '
    + (data.to || ''))) : ('refused (' + response.status + '): ' + (data.detail || ''));
  out.className = response.ok ? 'ok' : 'bad';
  out.dataset.status = String(response.status);
  if (response.ok) { setTimeout(() => window.location.reload(), 1200); }
}
// Airflow's UI frames this page without allow-modals: window.confirm() is blocked there, so
// a button asks in the page itself (Confirm / Cancel next to the result line)
function ask(text, run) {
  const box = document.getElementById('confirm');
  const label = document.createElement('span');
  label.textContent = text + ' ';
  const yes = document.createElement('button');
  yes.id = 'confirm-yes';
  yes.className = 'danger';
  yes.textContent = 'Confirm';
  yes.onclick = () => { box.replaceChildren(); run(); };
  const no = document.createElement('button');
  no.textContent = 'Cancel';
  no.onclick = () => box.replaceChildren();
  box.replaceChildren(label, yes, ' ', no);
  box.scrollIntoView({block: 'nearest'});
}
function rollback(alias, current) {
  const reason = document.getElementById('reason-' + alias).value;
  ask('Roll ' + alias + ' back from ' + current + ' to the version before?', () =>
    post('api/aliases/' + encodeURIComponent(alias) + '/rollback', {reason: reason}));
}
function decide(actionId, verb) {
  ask(verb.charAt(0).toUpperCase() + verb.slice(1) + ' ' + actionId + '?', () =>
    post('api/actions/' + encodeURIComponent(actionId) + '/' + verb, {}));
}
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def _when(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return _e(str(value)[:16].replace("T", " ") + " UTC") if value else ""


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} days ago"


def _unavailable(panel: dict[str, Any]) -> str:
    return f'<div class="unavailable" role="alert">{_e(panel["error"])}</div>'


def dag_run_link(dag_id: str, run_id: str) -> str:
    href = f"../dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
    return f'<a href="{_e(href)}" target="_top">{_e(dag_id)} / {_e(run_id)}</a>'


def _build(run: dict[str, Any] | None) -> str:
    if not run:
        return '<span class="muted">unknown (no gate run for this version)</span>'
    build = run["build"]
    if build["dag_id"] and build["run_id"]:
        return dag_run_link(build["dag_id"], build["run_id"])
    return f"<code>{_e(build['run_id'])}</code> <span class='muted'>(outside Airflow)</span>"


def _metrics(run: dict[str, Any]) -> str:
    baseline = run["baseline"]
    rows = "".join(
        f"<tr><td>{_e(key.removeprefix('hybrid.'))}</td><td>{value:.3f}</td>"
        f"<td class='muted'>{f'vs {baseline[key]:.3f}' if key in baseline else ''}</td></tr>"
        for key, value in sorted(run["metrics"].items())
    )
    return f'<table class="metrics">{rows}</table>' if rows else ""


def _mlflow(run: dict[str, Any]) -> str:
    if run["mlflow_url"]:
        return f'<a href="{_e(run["mlflow_url"])}" target="_blank" rel="noopener">MLflow run</a>'
    return f"MLflow run <code>{_e(run['mlflow_run_id'][:12])}</code>"


def _verdict(run: dict[str, Any] | None, gate: dict[str, Any]) -> str:
    if run is None:
        return (
            '<span class="muted">no gate run yet</span>'
            if gate.get("enabled")
            else ('<span class="muted">gate disabled (OPSASSIST_GATE_ENABLED=false)</span>')
        )
    css = "ok" if run["decision"] == "promote" else "bad"
    label = "promoted" if run["decision"] == "promote" else "refused"
    return (
        f'<span class="badge {css}" data-decision="{_e(run["decision"])}">{label}</span> '
        f"<code>{_e(run['version'])}</code> {_when(run['started'])}<br>"
        f"<span class='reason'>{_e(run['reason'])}</span>{_metrics(run)}{_mlflow(run)}"
    )


def index_section(index: dict[str, Any], gate: dict[str, Any], can_operate: bool) -> str:
    parts = ["<h2>Index aliases</h2>"]
    if not index["ok"]:
        return "".join(parts) + _unavailable(index)
    if not gate["ok"]:
        parts.append(_unavailable(gate))
    head = (
        "<tr><th>alias</th><th>promoted version</th><th>size</th><th>built by</th>"
        "<th>last gate verdict</th><th>versions</th><th>rollback</th></tr>"
    )
    rows = []
    for alias in index["aliases"]:
        promoted = alias["promoted"]
        gated = gate["ok"] and alias["alias"] == gate["alias"]
        built = (
            _build(gate["promoted_by"].get(promoted))
            if gated and promoted
            else (
                '<span class="muted">signal ingest (not gated)</span>'
                if not gated and gate["ok"]
                else ""
            )
        )
        verdict = _verdict(gate["last"], gate) if gated else '<span class="muted">-</span>'
        versions = ", ".join(
            f"<b>{_e(v['version'])}</b>" if v["promoted"] else _e(v["version"])
            for v in alias["versions"]
        )
        size = (
            f"{alias['chunks']} chunks, {alias['sources']} sources"
            if promoted
            else '<span class="muted">-</span>'
        )
        disabled = "" if can_operate and alias["can_roll_back"] else " disabled"
        why = "" if can_operate else ' title="needs the operator role in Airflow"'
        button = (
            f'<input type="text" id="reason-{_e(alias["alias"])}" placeholder="reason">'
            f' <button class="danger" id="rollback-{_e(alias["alias"])}"{disabled}{why}'
            f' data-alias="{_e(alias["alias"])}" data-version="{_e(promoted)}"'
            ' onclick="rollback(this.dataset.alias, this.dataset.version)">Roll back</button>'
        )
        rows.append(
            f'<tr data-alias="{_e(alias["alias"])}"><td><b>{_e(alias["alias"])}</b></td>'
            f"<td><code>{_e(promoted or 'none')}</code></td><td>{size}</td><td>{built}</td>"
            f"<td>{verdict}</td><td>{versions}</td><td>{button}</td></tr>"
        )
    parts.append(f'<table id="aliases">{head}{"".join(rows)}</table>')
    return "".join(parts)


def audit_section(audit: dict[str, Any]) -> str:
    parts = ["<h2>Recent rollbacks</h2>"]
    if not audit["ok"]:
        return "".join(parts) + _unavailable(audit)
    if not audit["records"]:
        return "".join(parts) + '<p class="muted">none</p>'
    rows = "".join(
        f"<tr><td>{_when(r.get('at'))}</td><td>{_e(r.get('actor'))}</td><td>{_e(r.get('alias'))}"
        f"</td><td><code>{_e(r.get('from'))}</code> &rarr; <code>{_e(r.get('to'))}</code></td>"
        f"<td>{_e(r.get('reason'))}</td></tr>"
        for r in audit["records"][:5]
    )
    head = "<tr><th>when</th><th>who</th><th>alias</th><th>change</th><th>why</th></tr>"
    return "".join(parts) + f'<table id="rollbacks">{head}{rows}</table>'


def quarantine_section(quarantine: dict[str, Any]) -> str:
    parts = ["<h2>Quarantined runbooks</h2>"]
    if not quarantine["ok"]:
        return "".join(parts) + _unavailable(quarantine)
    if not quarantine["entries"]:
        return "".join(parts) + '<p class="muted">none in the last run</p>'
    rows = "".join(
        f"<tr><td><code>{_e(q.get('source'))}</code></td><td>{_e(q.get('reason'))}</td>"
        f"<td class='muted'>{_e(str(q.get('detail') or '')[:160])}</td>"
        f"<td class='muted'>{_e(q.get('run_id'))}</td></tr>"
        for q in quarantine["entries"]
    )
    head = "<tr><th>file</th><th>reason</th><th>detail</th><th>run</th></tr>"
    return "".join(parts) + f'<table id="quarantine">{head}{rows}</table>'


def signals_section(signals: dict[str, Any]) -> str:
    parts = ["<h2>Signals: freshness and dead letters</h2>"]
    if not signals["ok"]:
        return "".join(parts) + _unavailable(signals)
    rows = []
    for s in signals["sources"]:
        fresh = (
            f"p50 {s['freshness_p50_s']:.1f} s, p95 {s['freshness_p95_s']:.1f} s"
            if s["freshness_p95_s"] is not None
            else '<span class="muted">-</span>'
        )
        letters = ", ".join(f"{_e(k)}: {v}" for k, v in s["dead_letters"].items()) or "none"
        css = "bad" if s["dead_letter_total"] else "ok"
        file = (
            f"<br><span class='muted'>{s['dead_letter_file_lines']} in "
            f"{_e(s['dead_letter_file'].rsplit('/', 2)[-2:][-1])}</span>"
            if s["dead_letter_file"]
            else ""
        )
        rows.append(
            f'<tr data-source="{_e(s["source"])}"><td><b>{_e(s["source"])}</b></td>'
            f"<td>{_e(_age(s['age_s']))}</td><td>{fresh}</td><td>{s['batches']}</td>"
            f"<td>{s['accepted']} / {s['records']}</td>"
            f'<td><span class="badge {css}">{s["dead_letter_total"]}</span> {letters}{file}</td>'
            "</tr>"
        )
    head = (
        "<tr><th>source</th><th>last batch searchable</th><th>freshness (last batch)</th>"
        "<th>batches</th><th>accepted / records</th><th>dead letters</th></tr>"
    )
    return "".join(parts) + f'<table id="signals">{head}{"".join(rows)}</table>'


def actions_section(
    actions: dict[str, Any], can_operate: bool, awaiting: dict[str, str] | None, dag_id: str
) -> str:
    parts = ["<h2>Pending agent actions</h2>"]
    if not actions["ok"]:
        return "".join(parts) + _unavailable(actions)
    if not actions["pending"]:
        return "".join(parts) + '<p class="muted">none</p>'
    if awaiting is None:
        parts.append(
            '<p class="muted">Could not ask Airflow which actions wait on its Required Actions '
            "page: the buttons are shown for all.</p>"
        )
    rows = []
    for a in actions["pending"]:
        run_id = (awaiting or {}).get(a["id"])
        if run_id:
            decide = (
                f'Waiting in Airflow: <a href="../required_actions" target="_top">Required '
                f"Actions</a> ({dag_run_link(dag_id, run_id)})"
            )
        else:
            disabled = "" if can_operate else " disabled"
            why = "" if can_operate else ' title="needs the operator role in Airflow"'
            decide = (
                f'<button class="go" id="approve-{_e(a["id"])}"{disabled}{why} '
                f'data-action="{_e(a["id"])}" onclick="decide(this.dataset.action, '
                "'approve')\">Approve</button> "
                f'<button class="danger" id="reject-{_e(a["id"])}"{disabled}{why} '
                f'data-action="{_e(a["id"])}" onclick="decide(this.dataset.action, '
                "'reject')\">Reject</button>"
            )
        rows.append(
            f'<tr data-action="{_e(a["id"])}"><td><code>{_e(a["id"])}</code></td>'
            f"<td>{_e(a['tool'])}<br><span class='muted'>"
            f"{_e(json.dumps(a.get('arguments') or {}, sort_keys=True))}</span></td>"
            f"<td><code>{_e(a.get('change_text'))}</code></td>"
            f"<td>{_e(a['requested_by'])}<br><span class='muted'>{_e(a['question'][:120])}"
            f"</span></td><td>{_when(a['created_at'])}<br><span class='muted'>expires "
            f"{_when(a['expires_at'])}</span></td><td>{decide}</td></tr>"
        )
    head = (
        "<tr><th>action</th><th>tool</th><th>change</th><th>asked by</th><th>created</th>"
        "<th>decision</th></tr>"
    )
    return "".join(parts) + f'<table id="actions">{head}{"".join(rows)}</table>'


def _cited(source: Any) -> str:
    """A source the flagged answers cited: ``path#section (n bad)`` or as given."""
    if not isinstance(source, dict):
        return str(source)
    section = f"#{source['section']}" if source.get("section") else ""
    count = f" ({source['bad_count']} bad)" if source.get("bad_count") else ""
    return f"{source.get('source', '')}{section}{count}"


def feedback_section(feedback: dict[str, Any]) -> str:
    parts = ["<h2>Flagged by feedback</h2>"]
    if not feedback["ok"]:
        return "".join(parts) + _unavailable(feedback)
    if not feedback.get("configured"):
        return "".join(parts) + '<p class="muted" id="feedback">feedback loop not configured</p>'
    if not feedback["flagged"]:
        return "".join(parts) + '<p class="muted" id="feedback">no question flagged</p>'
    rows = "".join(
        f"<tr><td>{_e(f.get('question'))}</td><td>{_e(f.get('bad_count'))}</td>"
        f"<td>{_when(f.get('last_rated_at'))}</td><td><code>{_e(f.get('index_version'))}</code>"
        f"</td><td>{_e(', '.join(_cited(c) for c in f.get('sources') or []))}</td></tr>"
        for f in feedback["flagged"]
    )
    head = (
        "<tr><th>question</th><th>rated bad</th><th>last rated</th><th>index version</th>"
        "<th>sources cited</th></tr>"
    )
    return "".join(parts) + f'<table id="feedback">{head}{rows}</table>'


def render(
    data: dict[str, Any],
    *,
    user: str,
    can_operate: bool,
    awaiting: dict[str, str] | None,
    dag_id: str,
) -> str:
    rights = "may roll back and decide" if can_operate else "read only"
    body = "".join(
        [
            f'<h1>Knowledge</h1><div class="who">{_e(user)} &middot; {rights}</div>',
            '<div id="confirm"></div><div id="result" aria-live="polite"></div>',
            index_section(data["index"], data["gate"], can_operate),
            audit_section(data["index_audit"]),
            quarantine_section(data["quarantine"]),
            signals_section(data["signals"]),
            actions_section(data["actions"], can_operate, awaiting, dag_id),
            feedback_section(data["feedback"]),
        ]
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Knowledge</title>'
        f"<style>{CSS}</style><script>{SCRIPT}</script></head><body>{body}</body></html>"
    )
