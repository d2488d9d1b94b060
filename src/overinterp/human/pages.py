"""HTML, CSS and JavaScript of the study web app (served from memory, never from disk paths)."""

from __future__ import annotations

import html
from string import Template

__all__ = ["STATIC", "landing_page", "question_page", "admin_page", "message_page"]

CSS = """
:root { --fg:#1d232a; --muted:#5b6670; --bg:#f4f5f7; --card:#fff; --accent:#1f5fbf; --line:#d5d9de; }
* { box-sizing: border-box; }
body { margin:0; font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--fg); background:var(--bg); }
main { max-width: 760px; margin: 0 auto; padding: 24px 16px 48px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:24px; margin-bottom:16px; }
h1 { font-size:1.6rem; margin:0 0 12px; } h2 { font-size:1.15rem; margin:16px 0 8px; }
p, li { color:var(--fg); } .muted { color:var(--muted); font-size:.92rem; }
button { font:inherit; cursor:pointer; border-radius:8px; border:1px solid var(--line); background:#fff; padding:10px 14px; }
button.primary { background:var(--accent); color:#fff; border-color:var(--accent); font-weight:600; padding:12px 22px; }
button:disabled { opacity:.5; cursor:default; }
.examples { display:flex; gap:12px; align-items:center; flex-wrap:wrap; }
.stimulus { display:flex; justify-content:center; margin:8px 0 16px; }
.stimulus img { width:min(384px, 80vw); height:min(384px, 80vw); image-rendering:pixelated; image-rendering:crisp-edges;
  border:1px solid var(--line); border-radius:4px; background:#808080; }
.choices { display:grid; grid-template-columns:repeat(5, 1fr); gap:8px; }
.choices button { padding:14px 4px; font-weight:600; text-transform:capitalize; }
.choices button:hover:not(:disabled) { border-color:var(--accent); background:#eef3fb; }
.choices kbd { display:block; font:400 .75rem ui-monospace,monospace; color:var(--muted); }
.progress { height:10px; background:#e3e6ea; border-radius:5px; overflow:hidden; margin:6px 0 4px; }
.progress > div { height:100%; background:var(--accent); width:0; transition:width .2s; }
.topline { display:flex; justify-content:space-between; font-size:.92rem; color:var(--muted); }
.notice { padding:10px 14px; border-radius:8px; background:#fff6dd; border:1px solid #ecd58f; margin:8px 0; }
.error { background:#fde8e8; border-color:#f0b4b4; }
.hidden { display:none !important; }
table { border-collapse:collapse; width:100%; font-size:.92rem; } th, td { text-align:left; padding:6px 8px; border-bottom:1px solid var(--line); }
code { font:.9rem ui-monospace,monospace; background:#eef0f3; padding:1px 4px; border-radius:4px; }
@media (max-width: 560px) { .choices { grid-template-columns:repeat(2, 1fr); } }
"""

LANDING_JS = """
"use strict";
const consent = document.getElementById("consent");
const start = document.getElementById("start");
const err = document.getElementById("error");
if (consent) consent.addEventListener("change", () => { start.disabled = !consent.checked; });
if (start) start.addEventListener("click", async () => {
  start.disabled = true; err.classList.add("hidden");
  try {
    const r = await fetch("/api/participants", {method: "POST", headers: {"Content-Type": "application/json"},
                                                  body: JSON.stringify({consent: true})});
    const data = await r.json();
    if (!r.ok) throw new Error(data.detail || r.statusText);
    window.location.assign(data.url);
  } catch (e) {
    err.textContent = "Could not start: " + e.message + ". Please try again."; err.classList.remove("hidden");
    start.disabled = false;
  }
});
"""

QUESTION_JS = """
"use strict";
const pid = document.body.dataset.participant;
const $ = (id) => document.getElementById(id);
let state = null, shownAt = 0, busy = false, breakSeen = -1;

function setButtons(on) { document.querySelectorAll(".choices button").forEach(b => { b.disabled = !on; }); }
function notice(text, isError) {
  const n = $("notice"); n.textContent = text || ""; n.classList.toggle("hidden", !text); n.classList.toggle("error", !!isError);
}
async function api(path, options) {
  const r = await fetch(path, Object.assign({cache: "no-store"}, options || {}));
  let data = null; try { data = await r.json(); } catch (e) { data = {}; }
  if (!r.ok) { const e = new Error(typeof data.detail === "string" ? data.detail : r.statusText); e.status = r.status; throw e; }
  return data;
}
function render() {
  const s = state;
  $("progress-bar").style.width = (100 * s.answered / s.total) + "%";
  $("progress-text").textContent = s.answered + " of " + s.total + " answered";
  if (s.done) {
    $("question").classList.add("hidden"); $("break").classList.add("hidden"); $("done").classList.remove("hidden");
    $("batch-text").textContent = "Finished"; return;
  }
  const b = s.batch;
  $("batch-text").textContent = "Part " + (b.index + 1) + " of " + b.count + " \\u00b7 " + b.percent + "% of pixels shown";
  if (b.answered === 0 && breakSeen !== b.index) {
    $("break-title").textContent = "Part " + (b.index + 1) + " of " + b.count;
    $("break-text").textContent = "In this part about " + b.percent + "% of each image's pixels are visible; " +
      "the rest are grey. " + (b.index === 0 ? "" : "You will now see more of each image than before.");
    $("question").classList.add("hidden"); $("break").classList.remove("hidden"); $("continue").focus(); return;
  }
  $("break").classList.add("hidden"); $("question").classList.remove("hidden");
  const img = $("stimulus");
  img.dataset.stimulus = s.question.stimulus;
  setButtons(false);
  const ready = () => { shownAt = performance.now(); notice(""); setButtons(true); };
  let tries = 0;
  img.onload = ready;
  img.onerror = () => {  // e.g. the server restarting: try again, the question stays the same
    if (img.dataset.stimulus !== s.question.stimulus) return;
    tries += 1;
    notice("Connection problem while loading the image; retrying\u2026", true);
    setTimeout(() => { if (img.dataset.stimulus === s.question.stimulus) img.src = s.question.image + "?retry=" + tries; },
               Math.min(5000, 500 * tries));
  };
  if (img.getAttribute("src") === s.question.image && img.complete && img.naturalWidth > 0) ready();
  else img.src = s.question.image;
}
async function load() {
  try { state = await api("/api/p/" + pid + "/state"); notice(""); render(); }
  catch (e) { notice("Connection problem (" + e.message + "). Your answers so far are saved; retrying\\u2026", true);
              setTimeout(load, 2000); }
}
async function answer(choice) {
  if (busy || !state || state.done || $("question").classList.contains("hidden")) return;
  busy = true; setButtons(false);
  const body = {stimulus: state.question.stimulus, position: state.question.position, choice: choice,
                response_ms: Math.round(performance.now() - shownAt)};
  for (let attempt = 0; ; attempt++) {
    try {
      const data = await api("/api/p/" + pid + "/answers", {method: "POST",
        headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
      state = data.state; notice(""); busy = false; render(); return;
    } catch (e) {
      if (e.status && e.status < 500) { notice(e.message, true); busy = false; await load(); return; }
      notice("Connection problem; your answer will be sent again\\u2026", true);
      await new Promise(r => setTimeout(r, Math.min(5000, 500 * (attempt + 1))));
    }
  }
}
document.querySelectorAll(".choices button").forEach(b => b.addEventListener("click", () => answer(Number(b.dataset.choice))));
$("continue").addEventListener("click", () => { breakSeen = state.batch.index; render(); });
document.addEventListener("keydown", (ev) => {
  if (ev.target && ev.target.tagName === "INPUT") return;
  const k = ev.key === "0" ? 9 : Number(ev.key) - 1;
  const btn = document.querySelector('.choices button[data-choice="' + k + '"]');
  if (btn && /^[0-9]$/.test(ev.key)) { ev.preventDefault(); if (!btn.disabled) btn.click(); }
});
const link = $("personal-link");  // a relative link: shown with the address this page was opened at
if (link && link.textContent.startsWith("/")) link.textContent = window.location.origin + link.textContent;
load();
"""

ADMIN_JS = """
"use strict";
const $ = (id) => document.getElementById(id);
async function refresh() {
  const r = await fetch("/api/admin/participants", {cache: "no-store"});
  if (r.status === 401) { $("login").classList.remove("hidden"); $("dash").classList.add("hidden"); return; }
  const data = await r.json();
  $("login").classList.add("hidden"); $("dash").classList.remove("hidden");
  $("summary").textContent = data.participants.length + " participants, " + data.completed + " completed, " +
    data.answers + " answers";
  const body = $("rows"); body.textContent = "";
  for (const p of data.participants) {
    const tr = document.createElement("tr");
    for (const v of [p.number, p.answered + " / " + data.total, p.started_at, p.completed_at || "\\u2014"]) {
      const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
    }
    body.appendChild(tr);
  }
}
$("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const r = await fetch("/api/admin/login", {method: "POST", headers: {"Content-Type": "application/json"},
                                              body: JSON.stringify({token: $("token").value})});
  $("login-error").classList.toggle("hidden", r.ok);
  if (r.ok) refresh();
});
$("logout").addEventListener("click", async () => { await fetch("/api/admin/logout", {method: "POST"}); refresh(); });
refresh();
"""

STATIC: dict[str, tuple[str, str]] = {
    "style.css": ("text/css; charset=utf-8", CSS),
    "landing.js": ("text/javascript; charset=utf-8", LANDING_JS),
    "question.js": ("text/javascript; charset=utf-8", QUESTION_JS),
    "admin.js": ("text/javascript; charset=utf-8", ADMIN_JS),
}

_SHELL = Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title><link rel="stylesheet" href="/static/style.css"></head>
<body$attrs><main>
$body
</main>$script</body></html>
""")


def _page(title: str, body: str, script: str | None = None, attrs: str = "") -> str:
    tag = f'<script src="/static/{script}"></script>' if script else ""
    return _SHELL.substitute(title=html.escape(title), body=body, script=tag, attrs=attrs)


def landing_page(num_questions: int, classes: list[str], percents: list[str], resume_url: str | None) -> str:
    """Instructions, consent and start (or continue) button."""
    names = ", ".join(html.escape(c) for c in classes)
    resume = ""
    if resume_url:
        resume = (
            f'<div class="notice">You have already started. <a href="{html.escape(resume_url)}">'
            f"Continue where you stopped</a>.</div>"
        )
    body = f"""
<div class="card">
<h1>Can you recognise these images?</h1>
{resume}
<p>You will see small photographs in which most pixels are hidden and shown in plain grey. For each one,
choose which of these {len(classes)} categories it shows: <strong>{names}</strong>.</p>
<h2>How it works</h2>
<ul>
<li>There are {num_questions} images in {len(percents)} parts. The first part shows about {percents[0]} of each
image's pixels; later parts show more ({", ".join(percents)}).</li>
<li>Each image shows exactly one of the categories. If you are unsure, make your best guess — every image needs
one answer, and answers cannot be changed.</li>
<li>Click a category button or press its number key (1–9, 0 for the tenth).</li>
<li>There is no time limit. You can close the page and come back later on the same browser, or bookmark your
personal link shown on the next page: you will continue where you stopped.</li>
<li>We store only your answers, their times and how long each took — nothing that identifies you.</li>
</ul>
<p><label><input type="checkbox" id="consent"> I have read these instructions and agree to take part.</label></p>
<p><button class="primary" id="start" disabled>Start</button></p>
<div id="error" class="notice error hidden"></div>
</div>"""
    return _page("Image recognition study", body, "landing.js")


def question_page(participant: str, classes: list[str], personal_url: str) -> str:
    """The question screen; its state comes from the JSON API. ``personal_url`` is absolute
    (from the configured public URL) or a path, which the page's script completes with its own origin."""
    buttons = "\n".join(
        f'<button type="button" data-choice="{i}" disabled>{html.escape(c)}<kbd>{(i + 1) % 10}</kbd></button>'
        if i < 10
        else f'<button type="button" data-choice="{i}" disabled>{html.escape(c)}</button>'
        for i, c in enumerate(classes)
    )
    body = f"""
<div class="card">
<div class="topline"><span id="batch-text">Loading…</span><span id="progress-text"></span></div>
<div class="progress"><div id="progress-bar"></div></div>
<div id="notice" class="notice hidden"></div>
<section id="break" class="hidden"><h1 id="break-title"></h1><p id="break-text"></p>
<p><button class="primary" id="continue">Continue</button></p></section>
<section id="question" class="hidden">
<h1>Which category does this image show?</h1>
<div class="stimulus"><img id="stimulus" alt="image to classify (most pixels hidden)"></div>
<div class="choices">
{buttons}
</div>
</section>
<section id="done" class="hidden"><h1>Thank you!</h1><p>You have answered every image. Your answers are saved;
you can close this page.</p></section>
</div>
<p class="muted">Your personal link (to continue later): <code id="personal-link">{html.escape(personal_url)}</code></p>"""
    return _page(
        "Image recognition study", body, "question.js", attrs=f' data-participant="{html.escape(participant)}"'
    )


def admin_page(study_name: str) -> str:
    """Token login and the participants' progress; CSV download link."""
    body = f"""
<div class="card">
<h1>Study administration</h1><p class="muted">Study: {html.escape(study_name)}</p>
<form id="login" class="hidden"><p><label>Admin token <input id="token" type="password" autocomplete="off"></label>
<button class="primary" type="submit">Sign in</button></p><p id="login-error" class="notice error hidden">Wrong token.</p></form>
<section id="dash" class="hidden"><p id="summary"></p>
<p><a href="/admin/answers.csv">Download all answers (CSV)</a> · <button id="logout" type="button">Sign out</button></p>
<table><thead><tr><th>#</th><th>Answered</th><th>Started</th><th>Completed</th></tr></thead><tbody id="rows"></tbody></table>
</section></div>"""
    return _page("Study administration", body, "admin.js")


def message_page(title: str, text: str) -> str:
    """A plain page for errors such as an unknown participant link."""
    body = f'<div class="card"><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p><p><a href="/">Start page</a></p></div>'
    return _page(title, body)
