"""The study web app through FastAPI's TestClient: the participant flow, idempotent answers,
resuming, admin export, concurrency, and 4xx (never 5xx) for malformed requests."""

from __future__ import annotations

import csv
import io
import json
import threading

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from overinterp.human import db as dbm  # noqa: E402
from overinterp.human.app import ADMIN_COOKIE, create_app  # noqa: E402

TOKEN = "admin-secret-token"


@pytest.fixture()
def client(study):
    out, _ = study
    with TestClient(create_app(out, None, TOKEN)) as c:
        yield c


def start(client: TestClient) -> str:
    client.cookies.clear()
    r = client.post("/api/participants", json={"consent": True})
    assert r.status_code == 201, r.text
    return r.json()["participant"]


def labels_of(manifest) -> dict[str, int]:
    item_label = {it["item"]: it["label"] for it in manifest["items"]}
    return {st["id"]: item_label[st["item"]] for st in manifest["stimuli"]}


def answer(client: TestClient, pid: str, choice_of) -> dict:
    s = client.get(f"/api/p/{pid}/state").json()
    q = s["question"]
    r = client.post(
        f"/api/p/{pid}/answers",
        json={
            "stimulus": q["stimulus"],
            "position": q["position"],
            "choice": choice_of(q["stimulus"]),
            "response_ms": 800,
        },
    )
    assert r.status_code == 201, r.text
    return r.json()["state"]


def test_participant_flow(client, study):
    out, m = study
    truth = labels_of(m)
    fraction = {st["id"]: st["fraction"] for st in m["stimuli"]}
    page = client.get("/")
    assert page.status_code == 200 and "Start" in page.text and "5%" in page.text
    pid = start(client)
    assert client.get(f"/p/{pid}").status_code == 200
    seen, fractions = [], []
    while True:
        s = client.get(f"/api/p/{pid}/state").json()
        assert "label" not in json.dumps(s)  # nothing about the answer key
        if s["done"]:
            break
        q = s["question"]
        img = client.get(q["image"])
        assert img.status_code == 200 and img.content.startswith(b"\x89PNG")
        seen.append(q["stimulus"])
        fractions.append(fraction[q["stimulus"]])
        assert s["batch"]["fraction"] == fraction[q["stimulus"]]
        answer(client, pid, lambda sid: truth[sid] if fraction[sid] > 0.1 else (truth[sid] + 1) % 4)
    assert sorted(seen) == sorted(truth) and len(seen) == len(set(seen))
    assert fractions == sorted(fractions)  # batches in increasing subset size
    assert s["answered"] == s["total"] == len(m["stimuli"])
    csv_text = client.get("/admin/answers.csv", headers={"Authorization": f"Bearer {TOKEN}"}).text
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert [r["stimulus"] for r in rows] == seen
    assert all(r["correct"] == ("0" if float(r["fraction"]) < 0.1 else "1") for r in rows)
    assert all(r["answered_at"].endswith("Z") and r["response_ms"] == "800" for r in rows)
    assert rows[0]["participant_completed_at"]


def test_orders_are_shuffled_per_participant(client, study):
    _, m = study
    orders = []
    for _ in range(4):
        pid = start(client)
        with dbm.Session(client.app.state.engine) as s:
            orders.append(json.loads(s.get(dbm.Participant, pid).order_json))
    batch = {st["id"]: st["batch"] for st in m["stimuli"]}
    for o in orders:
        assert [batch[x] for x in o] == sorted(batch[x] for x in o)
    assert len({tuple(o) for o in orders}) > 1  # 8! orders per batch: equal by chance ~never


def test_repeat_submit_is_idempotent_and_answers_are_final(client, study):
    pid = start(client)
    q = client.get(f"/api/p/{pid}/state").json()["question"]
    body = {"stimulus": q["stimulus"], "position": 0, "choice": 2}
    first = client.post(f"/api/p/{pid}/answers", json=body)
    again = client.post(f"/api/p/{pid}/answers", json=body)
    assert first.status_code == 201 and again.status_code == 200 and again.json()["repeat"] is True
    assert first.json()["answered_at"] == again.json()["answered_at"]
    changed = client.post(f"/api/p/{pid}/answers", json={**body, "choice": 3})
    assert changed.status_code == 409 and "already answered" in changed.json()["detail"]
    assert len(dbm.export_rows(client.app.state.engine, study[1]["study_id"])) == 1


def test_resume_after_restart_and_cookie(study):
    out, m = study
    with TestClient(create_app(out, None, TOKEN)) as c:
        pid = start(c)
        for _ in range(5):
            answer(c, pid, lambda sid: 0)
    with TestClient(create_app(out, None, TOKEN)) as c:  # a new server process on the same database
        s = c.get(f"/api/p/{pid}/state").json()
        assert s["answered"] == 5 and s["question"]["position"] == 5
        c.cookies.set("overinterp_participant", pid)
        assert f"/p/{pid}" in c.get("/").text  # "continue where you stopped"
        r = c.post("/api/participants", json={"consent": True})
        assert r.status_code == 200 and r.json()["participant"] == pid and r.json()["resumed"]


def test_images_only_up_to_the_current_question(client, study):
    _, m = study
    pid, other = start(client), start(client)
    with dbm.Session(client.app.state.engine) as s:
        order = json.loads(s.get(dbm.Participant, pid).order_json)
    assert client.get(f"/api/p/{pid}/image/{order[0]}").status_code == 200
    assert client.get(f"/api/p/{pid}/image/{order[-1]}").status_code == 404  # a later, larger subset
    answer(client, pid, lambda sid: 1)
    assert client.get(f"/api/p/{pid}/image/{order[0]}").status_code == 200  # answered: still viewable
    # another participant's state shows their own progress, never the first one's answers
    assert client.get(f"/api/p/{other}/state").json()["answered"] == 0


def test_admin_requires_token(client, study):
    start(client)
    assert client.get("/admin/answers.csv").status_code == 401
    assert client.get("/admin/answers.csv", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/admin/participants").status_code == 401
    assert client.post("/api/admin/login", json={"token": "wrong"}).status_code == 401
    r = client.post("/api/admin/login", json={"token": TOKEN})
    assert r.status_code == 200 and ADMIN_COOKIE in r.cookies
    data = client.get("/api/admin/participants").json()
    assert data["total"] == len(study[1]["stimuli"]) and len(data["participants"]) == 1
    assert "participant" not in data["participants"][0]  # opaque ids are not listed
    assert client.get("/admin/answers.csv").status_code == 200
    client.post("/api/admin/logout")
    client.cookies.delete(ADMIN_COOKIE)
    assert client.get("/admin/answers.csv").status_code == 401
    with TestClient(create_app(study[0], None, None)) as c:  # no token configured: admin disabled
        assert c.get("/admin/answers.csv", headers={"Authorization": "Bearer x"}).status_code == 403


def test_concurrent_answers_store_once(study):
    out, m = study
    engine = dbm.make_engine(dbm.default_database_url(out))
    try:
        pids = [dbm.create_participant(engine, m["study_id"]).id for _ in range(4)]
        results: list[tuple[str, bool]] = []
        errors: list[Exception] = []
        lock = threading.Lock()

        def submit(pid: str) -> None:
            with dbm.Session(engine) as s:
                first = json.loads(s.get(dbm.Participant, pid).order_json)[0]
            try:
                _, repeat = dbm.record_answer(engine, pid, first, 1, 0, 4)
                with lock:
                    results.append((pid, repeat))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=submit, args=(p,)) for p in pids for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        for p in pids:  # each participant's answer stored once; the other three submits were repeats
            assert sorted(r for q, r in results if q == p) == [False, True, True, True]
        assert len(dbm.export_rows(engine, m["study_id"])) == len(pids)
        assert len({dbm.create_participant(engine, m["study_id"]).id for _ in range(3)}) == 3
    finally:
        engine.dispose()


def _malformed_cases(pid: str, sid_now: str, sid_later: str):
    url = f"/api/p/{pid}/answers"
    ok = {"stimulus": sid_now, "position": 0, "choice": 1}
    js = {"Content-Type": "application/json"}
    return [
        ("not json", "POST", url, b"{choice: 1", js, 400),
        ("too deep", "POST", url, b"[" * 3000, js, 400),
        ("not utf-8", "POST", url, b"\xff\xfe{}", js, 400),
        ("array body", "POST", url, b"[1, 2]", js, 422),
        ("form body", "POST", url, b"choice=1", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ("no content type", "POST", url, json.dumps(ok).encode(), {}, 415),
        ("missing field", "POST", url, json.dumps({"stimulus": sid_now}).encode(), js, 422),
        ("extra field", "POST", url, json.dumps({**ok, "label": 1}).encode(), js, 422),
        ("choice as text", "POST", url, json.dumps({**ok, "choice": "1"}).encode(), js, 422),
        ("choice negative", "POST", url, json.dumps({**ok, "choice": -1}).encode(), js, 422),
        ("choice too big", "POST", url, json.dumps({**ok, "choice": 4}).encode(), js, 422),
        ("choice float", "POST", url, json.dumps({**ok, "choice": 1.5}).encode(), js, 422),
        ("choice huge", "POST", url, b'{"stimulus": "%s", "position": 0, "choice": 1e400}' % sid_now.encode(), js, 422),
        ("stimulus not hex", "POST", url, json.dumps({**ok, "stimulus": "../study.json"}).encode(), js, 422),
        ("unknown stimulus", "POST", url, json.dumps({**ok, "stimulus": "0" * 32}).encode(), js, 404),
        ("out of order", "POST", url, json.dumps({**ok, "stimulus": sid_later, "position": 5}).encode(), js, 409),
        ("wrong position", "POST", url, json.dumps({**ok, "position": 3}).encode(), js, 409),
        ("oversized", "POST", url, json.dumps({**ok, "pad": "x" * 10_000}).encode(), js, 413),
        ("bad content-length", "POST", url, json.dumps(ok).encode(), {**js, "Content-Length": "abc"}, 400),
        ("unknown participant", "POST", f"/api/p/{'A' * 24}/answers", json.dumps(ok).encode(), js, 404),
        ("participant pattern", "POST", "/api/p/..%2F..%2Fetc/answers", json.dumps(ok).encode(), js, 404),
        ("bad participant id", "GET", "/api/p/a;b/state", None, {}, 422),
        ("consent missing", "POST", "/api/participants", b"{}", js, 422),
        ("consent false", "POST", "/api/participants", b'{"consent": false}', js, 422),
        ("consent text", "POST", "/api/participants", b'{"consent": "yes"}', js, 422),
        ("future image", "GET", f"/api/p/{pid}/image/{sid_later}", None, {}, 404),
        ("traversal image", "GET", f"/api/p/{pid}/image/..%2F..%2Fstudy.json", None, {}, 404),
        ("traversal image 2", "GET", f"/api/p/{pid}/image/%2e%2e%2fstudy.json", None, {}, 404),
        ("dotdot image", "GET", f"/api/p/{pid}/image/../../study.json", None, {}, 404),
        ("manifest", "GET", "/study.json", None, {}, 404),
        ("images folder", "GET", f"/images/{sid_now}.png", None, {}, 404),
        ("static traversal", "GET", "/static/..%2F..%2Fstudy.json", None, {}, 404),
        ("static unknown", "GET", "/static/app.py", None, {}, 404),
        ("GET on POST route", "GET", url, None, {}, 405),
        ("export no token", "GET", "/admin/answers.csv", None, {}, 401),
        ("export bad token", "GET", "/admin/answers.csv", None, {"Authorization": "Bearer " + "x" * 40}, 401),
        (
            "export non-ascii token",
            "GET",
            "/admin/answers.csv",
            None,
            {"Authorization": "Bearer \u00e9t\u00e9".encode("utf-8")},
            401,
        ),
        ("export basic auth", "GET", "/admin/answers.csv", None, {"Authorization": "Basic YWRtaW46eA=="}, 401),
        ("HEAD on a page", "HEAD", f"/api/p/{pid}/state", None, {}, 405),
        ("huge position", "POST", url, json.dumps({**ok, "position": 10**30}).encode(), js, 422),
        ("null choice", "POST", url, json.dumps({**ok, "choice": None}).encode(), js, 422),
        ("login empty", "POST", "/api/admin/login", b'{"token": ""}', js, 422),
        ("login wrong type", "POST", "/api/admin/login", b'{"token": 5}', js, 422),
    ]


def test_malformed_requests_get_4xx(client, study):
    pid = start(client)
    with dbm.Session(client.app.state.engine) as s:
        order = json.loads(s.get(dbm.Participant, pid).order_json)
    cases = _malformed_cases(pid, order[0], order[-1])
    failures = []
    for name, method, url, body, headers, expected in cases:
        r = client.request(method, url, content=body, headers=headers)
        detail_ok = True
        if r.headers.get("content-type", "").startswith("application/json") and method != "HEAD":
            detail_ok = bool(r.json().get("detail"))
        if r.status_code != expected or not detail_ok:
            failures.append(f"{name}: {r.status_code} (expected {expected}) {r.text[:120]}")
    assert not failures, "\n".join(failures)
    # none of them stored anything; the participant is still at question 1
    s = client.get(f"/api/p/{pid}/state").json()
    assert s["answered"] == 0 and s["question"]["stimulus"] == order[0]


def test_streamed_oversized_body_gets_413(client):
    """A chunked body (no Content-Length) is cut off at the limit too."""
    pid = start(client)
    chunks = iter([b'{"pad": "' + b"x" * 3000, b"x" * 3000 + b'"}'])
    r = client.post(f"/api/p/{pid}/answers", content=chunks, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "larger than 4096" in r.json()["detail"]
    small = iter([b'{"consent":', b" true}"])
    assert (
        client.post("/api/participants", content=small, headers={"Content-Type": "application/json"}).status_code == 200
    )
