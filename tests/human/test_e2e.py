"""End to end: two participants in headless Chromium (Playwright) against a real uvicorn server,
which is killed with SIGKILL midway and restarted; then the exported CSV and the scores are checked.

Skips only when Playwright or a Chromium binary is missing. Set OVERINTERP_SHOTS=DIR to also save
screenshots of the instructions, a question and the admin page there.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from humankit import CLASSES, build_tiny_study

from overinterp.cli import main

CHROMIUM = os.environ.get("OVERINTERP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "e2e-admin-token"

pytestmark = pytest.mark.slow


def _require_browser() -> None:
    pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no Chromium binary at {CHROMIUM} (apt-get install chromium, or set OVERINTERP_CHROMIUM)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`overinterp human serve` as a subprocess on 127.0.0.1."""

    def __init__(self, study: Path, port: int, log: Path) -> None:
        self.study, self.port, self.log = study, port, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "OVERINTERP_ADMIN_TOKEN": TOKEN, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "overinterp",
                    "human",
                    "serve",
                    "--study",
                    str(self.study),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("server did not come up within 60 s")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL: no shutdown handlers run
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _answered(db: Path, pid: str) -> int:
    with sqlite3.connect(db) as con:
        return con.execute("select count(*) from answers where participant_id = ?", (pid,)).fetchone()[0]


def test_two_participants_with_server_kill(tmp_path):
    _require_browser()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=20_000)  # a loaded 2-core machine can be slow

    study = tmp_path / "study"
    m = build_tiny_study(study)
    total = len(m["stimuli"])
    item_label = {it["item"]: it["label"] for it in m["items"]}
    truth = {st["id"]: item_label[st["item"]] for st in m["stimuli"]}
    fraction = {st["id"]: st["fraction"] for st in m["stimuli"]}
    policy = {  # participant A is always right; B is wrong on every 5% image
        "A": lambda sid: truth[sid],
        "B": lambda sid: truth[sid] if fraction[sid] > 0.1 else (truth[sid] + 1) % len(CLASSES),
    }
    shots = Path(os.environ["OVERINTERP_SHOTS"]) if os.environ.get("OVERINTERP_SHOTS") else None
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = Server(study, port, tmp_path / "server.log")
    server.start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            ctx = {k: browser.new_context(viewport={"width": 900, "height": 1000}) for k in "AB"}
            page = {k: ctx[k].new_page() for k in "AB"}
            for k in "AB":  # shown by pytest when the test fails
                page[k].on("console", lambda msg, k=k: print(f"[{k} console] {msg.text}"))
                page[k].on("pageerror", lambda err, k=k: print(f"[{k} page error] {err}"))
                page[k].on("requestfailed", lambda req, k=k: print(f"[{k} failed] {req.method} {req.url}"))
            pid: dict[str, str] = {}
            for k in "AB":
                p = page[k]
                p.goto(base + "/")
                expect(p.locator("#start")).to_be_disabled()
                if shots and k == "A":
                    shots.mkdir(parents=True, exist_ok=True)
                    p.screenshot(path=str(shots / "instructions.png"), full_page=True)
                p.check("#consent")
                p.click("#start")
                p.wait_for_url("**/p/*")
                pid[k] = p.url.rsplit("/", 1)[1]
            assert pid["A"] != pid["B"]

            def answer_one(k: str, expect_next: bool = True) -> None:
                p = page[k]
                p.wait_for_selector("#break:not(.hidden), #question:not(.hidden)")  # the state has loaded
                if p.locator("#break").is_visible():
                    p.click("#continue")
                img = p.locator("#stimulus")
                expect(p.locator(".choices button").first).to_be_enabled()
                before = p.locator("#progress-text").inner_text()
                sid = img.get_attribute("data-stimulus")
                if shots and k == "A" and before.startswith("3 of"):
                    p.screenshot(path=str(shots / "question.png"), full_page=True)
                p.click(f'.choices button[data-choice="{policy[k](sid)}"]')
                if expect_next:
                    expect(p.locator("#progress-text")).not_to_have_text(before, timeout=20_000)

            for _ in range(6):  # both participants at once, interleaved
                answer_one("A")
                answer_one("B")
            assert _answered(study / "study.sqlite", pid["A"]) == 6

            # kill -9 the server; B answers while it is down (the page retries), then it comes back
            for k in "AB":  # both pages idle first: their current image loaded
                expect(page[k].locator(".choices button").first).to_be_enabled()
            server.kill9()
            assert _answered(study / "study.sqlite", pid["A"]) == 6  # committed answers survived
            answer_one("B", expect_next=False)
            expect(page["B"].locator("#notice")).to_contain_text("Connection problem", timeout=10_000)
            server.start()
            expect(page["B"].locator("#progress-text")).to_have_text(f"7 of {total} answered", timeout=20_000)

            # A closes the browser and comes back: the start page offers to continue where they stopped
            state = ctx["A"].storage_state()
            ctx["A"].close()
            ctx["A"] = browser.new_context(storage_state=state, viewport={"width": 900, "height": 1000})
            page["A"] = ctx["A"].new_page()
            page["A"].goto(base + "/")
            page["A"].click("text=Continue where you stopped")
            expect(page["A"].locator("#progress-text")).to_have_text(f"6 of {total} answered")

            for k in "AB":
                while not page[k].locator("#done").is_visible():
                    answer_one(k)
                expect(page[k].locator("#progress-text")).to_have_text(f"{total} of {total} answered")

            admin = browser.new_context().new_page()
            admin.goto(base + "/admin")
            admin.fill("#token", TOKEN)
            admin.click("#login button[type=submit]")
            expect(admin.locator("#summary")).to_have_text(f"2 participants, 2 completed, {2 * total} answers")
            if shots:
                admin.screenshot(path=str(shots / "admin.png"), full_page=True)
            browser.close()

        req = urllib.request.Request(base + "/admin/answers.csv", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            served = r.read().decode()
    finally:
        server.stop()

    assert main(["human", "export", "--study", str(study), "--out", str(tmp_path / "answers.csv")]) == 0
    exported = (tmp_path / "answers.csv").read_text()
    assert exported == served
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert len(rows) == 2 * total
    for k, who in (("A", "1"), ("B", "2")):
        mine = [r for r in rows if r["participant"] == pid[k]]
        assert {r["participant_number"] for r in mine} == {who}
        assert sorted(r["stimulus"] for r in mine) == sorted(truth)  # every image once
        assert [int(r["position"]) for r in mine] == list(range(total))
        assert [float(r["fraction"]) for r in mine] == sorted(float(r["fraction"]) for r in mine)
        for r in mine:
            assert int(r["choice"]) == policy[k](r["stimulus"]) and int(r["label"]) == truth[r["stimulus"]]
    assert (
        main(
            [
                "human",
                "score",
                "--study",
                str(study),
                "--answers",
                str(tmp_path / "answers.csv"),
                "--out",
                str(tmp_path / "scores"),
                "--results",
                str(tmp_path / "results.csv"),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "scores" / "scores.json").read_text())
    t2 = {t["fraction"]: (t["mean"], t["participants"]) for t in report["table2"]}
    assert t2 == {0.05: (0.5, 2), 0.3: (1.0, 2), 0.5: (1.0, 2)}
    assert report["fit"]["n"] == 6 and 0 < report["fit"]["r2"] < 1
    if shots:
        shutil.copyfile(tmp_path / "scores" / "accuracy_vs_size.png", shots / "score_plot.png")
