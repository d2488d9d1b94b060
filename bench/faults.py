"""Fault injection: the figures of the fault suite (tests/faults/), from the same code.

1. dataset job: ``python -m overinterp backselect-dataset`` SIGKILLed ``--kills`` times at
   seeded random moments (start-up, mid-shard, mid-write) and resumed; its shards must be
   byte-identical to an uninterrupted run's, with no stray temporary and no process left;
2. web server: ``python -m overinterp human serve`` SIGKILLed ``--server-kills`` times while
   ``--clients`` threads answer as participants, restarted on the same database; every
   acknowledged (2xx) answer must be stored, and nothing that was not sent;
3. fuzz: ``--requests`` seeded requests against every route of the web app (in process,
   FastAPI's TestClient): no 5xx; JSON integers stay under 4,000 digits (over 4,300 is a
   known defect fixed elsewhere);
4. bad command-line inputs: the table of tests/faults/badinputs.py (also tests/cli/
   test_bad_inputs.py), each run in this process: exit code 2, one ``error:`` line, and no
   earlier output written or overwritten (issue 26's hostile command lines included);
5. tampered files: a shared run folder whose manifest names code (``import:`` with
   ``cmd=touch …``) against report, subsets evaluate, human build and the shard worker; one
   flipped bit in a checkpoint, a training ``checkpoint.pt`` and a trace; ``resnet20@``.
6. one writer per job folder: a second ``backselect-dataset`` into a folder whose job is
   paused mid-write of a shard must exit 2 naming the holder's pid and host, leave the live
   temporary alone, and the first must finish (tests/jobkit.py ``second_writer``);
7. Ray start-up: a driver that starts its own local cluster SIGKILLed 0.5, 2 and 6 s after
   it starts Ray must leave no process behind 20 s later (``kill_ray_driver_after``;
   ``--no-ray`` skips it).
8. forwarded headers (issue 26 item 4): 30 wrong admin logins from 127.0.0.1 to a real
   ``human serve``, each with a different ``X-Forwarded-For``: a 429 by the 11th;
9. disk full (issue 26 item 6): a trace write and a job's second shard hit ENOSPC
   (``/dev/full``): one error line naming the file, the earlier file unchanged, the job's
   finished shard kept and not redone on the rerun;
10. large images (issue 26 item 9): ``evaluate`` on two 6000×6000 PNGs: peak resident
   memory under 1 GB (the attack: 8.07 GB).

Exit code 0 when every fault was survived, 1 otherwise.

Usage:  .venv/bin/python bench/faults.py [--seed 0] [--kills 5] [--requests 1000] [--server-kills 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# this script's own folder off the path: its name would shadow the fault suite's package, tests/faults
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "human")]

import torch  # noqa: E402

from faults.badinputs import BACKSELECT, CASES, SENTINEL, make_world, try_case  # noqa: E402
from faults.bigimages import evaluate_peak_rss  # noqa: E402
from faults.diskfull import disk_full_for  # noqa: E402
from faults.forwarded import rotating_forwarded_logins  # noqa: E402
from faults.fuzz import MAX_DIGITS, fuzz_app  # noqa: E402
from faults.jobkill import run_job_kills  # noqa: E402
from faults.serverkill import run_server_kills  # noqa: E402
from faults.tamper import run_tamper_cases  # noqa: E402
from jobkit import kill_ray_driver_after, second_writer  # noqa: E402


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _show(problems: list[str], what: str) -> None:
    for p in problems[:10]:
        print(f"   {what}: {p}")
    if len(problems) > 10:
        print(f"   {what}: … {len(problems) - 10} more")


def _disk_full(world: Path) -> list[str]:
    """Problems of the two disk-full cases (empty: survived)."""
    import contextlib
    import io
    import json

    from overinterp.cli import main as cli

    world = make_world(world)
    problems: list[str] = []

    def run(argv: list[str], prefix: str | None) -> tuple[int, str, str]:
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            with disk_full_for(prefix) if prefix else contextlib.nullcontext():
                rc = cli(argv)
        return rc, err.getvalue(), out.getvalue()

    def one_line(rc: int, err: str, what: str) -> None:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        if rc != 2 or "Traceback" in err or not lines or "error:" not in lines[-1]:
            problems.append(f"{what}: exit {rc}, {err.strip()[-200:]!r}")
        elif "No space left on device" not in lines[-1] or "kept" not in lines[-1]:
            problems.append(f"{what}: {lines[-1]!r}")

    argv = [a.format(w=world) for a in BACKSELECT + ["--images", "{w}/good.npz", "--limit", "2"]]
    rc, err, _ = run(argv, "trace.pt")
    one_line(rc, err, "trace")
    if (world / "trace.pt").read_bytes() != SENTINEL or list(world.glob(".trace.pt*")):
        problems.append("trace: the earlier trace changed or a temporary was left")
    job = ["backselect-dataset", "--model", str(world / "small.pt"), "--dataset", str(world / "good.npz")]
    job += ["--method", "exact", "--limit", "6", "--shard-size", "2", "--out", str(world / "job"), "--no-progress"]
    rc, err, _ = run(job, "shard-00001.pt")
    one_line(rc, err, "job")
    kept = world / "job" / "shards" / "shard-00000.pt"
    before = kept.read_bytes() if kept.is_file() else None
    rc, err, out = run(job, None)
    summary = json.loads(out.strip().splitlines()[-1]) if rc == 0 else {}
    if before is None or kept.read_bytes() != before or summary.get("skipped") != 1 or summary.get("complete") != 3:
        problems.append(f"job rerun: exit {rc}, {summary or err.strip()[-200:]}")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    ap.add_argument("--kills", type=int, default=5, help="SIGKILLs of the dataset job (default 5)")
    ap.add_argument("--requests", type=int, default=1000, help="fuzz requests (default 1000)")
    ap.add_argument("--server-kills", type=int, default=2, help="SIGKILLs of the web server (default 2)")
    ap.add_argument("--clients", type=int, default=4, help="concurrent participant threads (default 4)")
    ap.add_argument("--participants", type=int, default=2, help="participants per client thread (default 2)")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray start-up kills")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    print(
        f"fault suite, seed {args.seed}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; scratch {tmp}",
        flush=True,
    )
    rows: list[tuple[str, str, str, str]] = []  # fault, injected, survived, details
    verdicts: list[bool] = []

    def add(fault: str, injected: str, survived: bool, result: str, details: str) -> None:
        verdicts.append(survived)
        rows.append((fault, injected, f"{'yes' if survived else 'NO'}: {result}", details))

    def phase(name: str, t0: float, c0: float) -> None:
        print(f"{name}: {time.monotonic() - t0:.1f} s wall, {_cpu_seconds() - c0:.1f} s CPU", flush=True)

    t_all, cpu_all = time.monotonic(), _cpu_seconds()
    try:
        # 1. dataset job
        t0, c0 = time.monotonic(), _cpu_seconds()
        (tmp / "job").mkdir()
        job = run_job_kills(tmp / "job", kills=args.kills, seed=args.seed)
        phase("1. dataset job", t0, c0)
        _show(job.problems, "problem")
        kinds = ", ".join(f"{k} {n}" for k, n in job.kinds.items())
        add(
            "dataset job: SIGKILL, resume",
            f"{job.kills} kills ({kinds})",
            job.survived,
            f"{job.identical_shards}/{job.shards} shards byte-identical",
            f"manifest {'equal' if job.manifest_equal else 'DIFFERS'} and commit records "
            f"{'equal' if job.records_equal else 'DIFFER'} (but for run times, pids, hosts); "
            f"{job.left_temporaries} kills left temporaries, {len(job.stray)} stray files after; "
            f"{job.leftover_processes} processes left; {job.finished_before_kill} resumes ended before their kill",
        )

        # 2. web server
        t0, c0 = time.monotonic(), _cpu_seconds()
        (tmp / "server").mkdir()
        srv = run_server_kills(
            tmp / "server",
            kills=args.server_kills,
            seed=args.seed,
            clients=args.clients,
            participants_per_client=args.participants,
        )
        phase("2. web server", t0, c0)
        for what, items in (("problem", srv.problems), ("lost", srv.lost), ("phantom", srv.phantom)):
            _show(items, what)
        add(
            "web server: SIGKILL under answers",
            f"{srv.kills} kills, {args.clients} client threads",
            srv.survived,
            f"{srv.acknowledged} answers acknowledged, {srv.stored} stored, {len(srv.lost)} lost",
            f"{len(srv.phantom)} stored but never sent; {srv.cut} requests cut by a kill, "
            f"{srv.stored_unacknowledged} of them stored; {srv.participants} participants complete; "
            f"{srv.server_errors} × 5xx, {srv.rate_limited} × 429; {srv.leftover_processes} processes left; "
            f"raised: {'; '.join(srv.limit_options) or 'no limit option (429s waited out)'}",
        )

        # 3. fuzz
        t0, c0 = time.monotonic(), _cpu_seconds()
        from humankit import build_tiny_study

        build_tiny_study(tmp / "fuzz-study")
        fz = fuzz_app(tmp / "fuzz-study", requests=args.requests, seed=args.seed)
        phase("3. fuzz", t0, c0)
        for what, items in (("5xx", fz.server_errors), ("not sent", fz.not_sent), ("database", fz.db_problems)):
            _show(items, what)
        by_class = {c: sum(n for st, n in fz.statuses.items() if st // 100 == c) for c in (2, 4, 5)}
        codes = ", ".join(f"{k}: {n}" for k, n in sorted(fz.statuses.items()))
        add(
            "web app: fuzzed requests",
            f"{fz.requests} requests, {fz.routes_hit}/{fz.routes} routes",
            fz.count_5xx == 0 and not fz.db_problems and not fz.not_sent,
            f"{fz.count_5xx} × 5xx",
            f"{by_class[2]} × 2xx, {by_class[4]} × 4xx ({codes})"
            f"; database {'consistent' if not fz.db_problems else 'INCONSISTENT'} after, "
            f"{fz.valid_answers} valid answers stored; {len(fz.not_sent)} not sent; integers ≤ {MAX_DIGITS} digits",
        )

        # 4. bad inputs
        t0, c0 = time.monotonic(), _cpu_seconds()
        world = make_world(Path(tempfile.mkdtemp(prefix="world-", dir=tmp)))
        tried = refused = skipped = 0
        for name, case in CASES.items():
            if case.needs_no_cuda and torch.cuda.is_available():
                skipped += 1
                continue
            tried += 1
            problems = try_case(world, case)
            refused += not problems
            _show(problems, name)
        phase("4. bad inputs", t0, c0)
        add(
            "command line: bad inputs",
            f"{tried} tried" + (f" ({skipped} skipped: GPU present)" if skipped else ""),
            refused == tried,
            f"{refused}/{tried} refused clearly",
            "exit code 2, one error line, no traceback, the expected message; no earlier output written or overwritten",
        )
        # 5. tampered files from outside (tests/faults/tamper.py)
        t0, c0 = time.monotonic(), _cpu_seconds()
        (tmp / "tamper").mkdir()
        tamper = run_tamper_cases(tmp / "tamper")
        phase("5. tampered files", t0, c0)
        for name, survived, detail in tamper:
            add(name, "1 try", survived, "refused" if survived else "ACCEPTED", detail)

        # 6. one writer per job folder
        t0, c0 = time.monotonic(), _cpu_seconds()
        (tmp / "writers").mkdir()
        sw = second_writer(tmp / "writers")
        phase("6. second writer", t0, c0)
        said = sw.second_stderr.strip().splitlines()
        names_holder = len(said) == 1 and f"process {sw.holder_pid} on host" in said[0]
        add(
            "job folder: a second writer",
            "same job started while the first writes a shard",
            sw.second_exit == 2 and names_holder and sw.live_temporaries_kept and sw.first_exit == 0 and sw.complete,
            f"second exit {sw.second_exit}, first exit {sw.first_exit}",
            f"second said: {said[-1][:120] if said else '(nothing)'}; the first's live temporary "
            f"{'kept' if sw.live_temporaries_kept else 'REMOVED'}; job {'complete' if sw.complete else 'INCOMPLETE'}; "
            f"files after: {', '.join(sw.files_after)}",
        )

        # 7. Ray start-up
        if not args.no_ray:
            t0, c0 = time.monotonic(), _cpu_seconds()
            kills = [kill_ray_driver_after(d) for d in (0.5, 2.0, 6.0)]
            phase("7. Ray start-up kills", t0, c0)
            left = sum(len(k["left"]) for k in kills)
            add(
                "Ray driver: SIGKILL in start-up",
                "kills 0.5, 2, 6 s after ray.init began",
                left == 0,
                f"{left} processes left after 20 s",
                "; ".join(
                    f"{k['delay']:g} s: {k['ray_processes_at_kill']} processes at the kill "
                    f"({'in start-up' if k['in_start_up'] else 'after start-up'}), gone in {k['seconds_to_clean']} s"
                    for k in kills
                ),
            )

        # 8. forwarded headers
        t0, c0 = time.monotonic(), _cpu_seconds()
        build_tiny_study(tmp / "fwd-study")
        codes = rotating_forwarded_logins(tmp / "fwd-study", tmp / "fwd-server.log")
        phase("8. forwarded headers", t0, c0)
        first = next((i + 1 for i, code in enumerate(codes) if code == 429), None)
        add(
            "web app: X-Forwarded-For rotation",
            f"{len(codes)} wrong logins, each another forwarded address",
            first is not None and first <= 11,
            f"first 429 at attempt {first}" if first else "no 429",
            f"{codes.count(401)} × 401, {codes.count(429)} × 429 (limit 10 a minute per client; "
            "forwarded headers believed only from --forwarded-allow-ips, default none)",
        )

        # 9. disk full
        t0, c0 = time.monotonic(), _cpu_seconds()
        problems = _disk_full(Path(tempfile.mkdtemp(prefix="diskfull-", dir=tmp)))
        phase("9. disk full", t0, c0)
        _show(problems, "disk full")
        add(
            "disk full (ENOSPC)",
            "a trace write; a job's second shard",
            not problems,
            "one error line naming the file" if not problems else f"{len(problems)} problems",
            "earlier trace unchanged, no temporary left; finished shard kept, rerun computes only the rest",
        )

        # 10. large images
        t0, c0 = time.monotonic(), _cpu_seconds()
        rc, peak_mb, err = evaluate_peak_rss(Path(tempfile.mkdtemp(prefix="big-", dir=tmp)))
        phase("10. large images", t0, c0)
        if rc:
            print(f"   evaluate: exit {rc}: {err.strip()[-300:]}")
        add(
            "large images: evaluate two 6000×6000 PNGs",
            "210 KB on disk, 108 MB each decoded",
            rc == 0 and peak_mb < 1000,
            f"peak RSS {peak_mb:.0f} MB (limit 1 GB; attack: 8.07 GB)",
            "decoded downscaled to 1024 px on the longer side ($OVERINTERP_MAX_IMAGE_SIDE); "
            "over 100 Mpx refused from the header ($OVERINTERP_MAX_IMAGE_PIXELS)",
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    heads = ("fault", "injected", "survived")
    widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(heads)]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(heads, widths)).rstrip())
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip())
    print()
    for r in rows:
        print(f"{r[0]}: {r[3]}")
    ok = all(verdicts)
    print(
        f"\nall faults survived: {'yes' if ok else 'NO'}  "
        f"({time.monotonic() - t_all:.1f} s wall, {_cpu_seconds() - cpu_all:.1f} s CPU)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
