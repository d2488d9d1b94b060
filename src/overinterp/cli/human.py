"""``overinterp human build|serve|export|score`` (registered by :mod:`overinterp.cli`).

    overinterp human build --out study/ --seed 0 --proportions 0.35,0.35,0.3 \\
        --model resnet20 r20.trace.pt cifar10:test@data --model vgg16 runs/bs-vgg16/ --model resnet18 ...
    OVERINTERP_ADMIN_TOKEN=secret overinterp human serve --study study/ --port 8000
    overinterp human export --study study/ --out answers.csv
    overinterp human score --study study/ --out study-scores/ --results results.csv

The web dependencies (``pip install overinterp[web]``) are imported only by the
commands that need them.
"""

from __future__ import annotations

import argparse
import functools
import os
import secrets
import sys
from pathlib import Path

from overinterp.cli import _common as c
from overinterp.errors import UserInputError

__all__ = ["add_parsers"]

_WEB_MODULES = ("fastapi", "uvicorn", "sqlalchemy", "starlette", "httpx")


def _needs_web(handler: c.Handler) -> c.Handler:
    """A missing web dependency is a user error naming the extra to install."""

    @functools.wraps(handler)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] in _WEB_MODULES:
                raise UserInputError(f"needs the web extra (pip install 'overinterp[web]'): {exc}") from exc
            raise

    return wrapped


def _usage(args: argparse.Namespace) -> int:
    print("usage: overinterp human {build,serve,export,score} … (see --help)", file=sys.stderr)
    return 2


def add_parsers(sub: c.Subparsers) -> None:
    """Register ``human`` and its subcommands."""
    h = sub.add_parser("human", help="human classification benchmark: build a study, serve it, export, score")
    hs = h.add_subparsers(dest="human_command", metavar="COMMAND")
    h.set_defaults(func=_usage)

    p = hs.add_parser("build", help="sample a study from backward-selection traces; write images and manifest")
    p.add_argument("--out", type=c.output_dir, required=True, help="study folder to create")
    p.add_argument(
        "--model",
        nargs="+",
        action="append",
        required=True,
        metavar="ARG",
        help="NAME TRACE IMAGES (trace file + images file/folder or a dataset spec, see "
        "docs/how-to/datasets.md) "
        "or NAME JOB_DIR (an `overinterp backselect-dataset --out` folder); repeat per model",
    )
    p.add_argument("--proportions", type=c.floats, help="share of images per model, in --model order (default equal)")
    p.add_argument(
        "--per-class", type=c.positive_int, default=10, help="images per class (default 10: 100 for CIFAR-10)"
    )
    p.add_argument(
        "--fractions", type=c.floats, default=[0.05, 0.3, 0.5], help="pixel-subset sizes (default 0.05,0.3,0.5)"
    )
    p.add_argument(
        "--min-confidence", type=c.fraction, default=0.99, help="the model must predict the label with p ≥ this"
    )
    p.add_argument("--mask-style", default="grey", choices=["grey", "checkerboard"], help="how hidden pixels look")
    p.add_argument("--classes", help="comma-separated class names (default: from the images, else CIFAR-10's)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--name", help="study name (default: the folder name)")
    p.add_argument("--database", help="SQLAlchemy URL (default sqlite:///<out>/study.sqlite)")
    p.add_argument("--force", action="store_true", help="replace an existing study in --out")
    p.set_defaults(func=_needs_web(_build))

    p = hs.add_parser("serve", help="run the study web app")
    p.add_argument("--study", type=Path, required=True, help="study folder (human build --out)")
    p.add_argument("--database", help="SQLAlchemy URL (default sqlite:///<study>/study.sqlite)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=c.port, default=8000, help="TCP port, 1-65535 (default 8000)")
    p.add_argument(
        "--admin-token", help="admin token (better: $OVERINTERP_ADMIN_TOKEN); a random one is printed if unset"
    )
    p.add_argument("--secure-cookies", action="store_true", help="mark cookies Secure (when served over HTTPS)")
    p.add_argument("--max-body", type=c.positive_int, default=4096, help="largest request body in bytes")
    p.add_argument(
        "--public-url",
        help="base URL of participants' personal links, e.g. https://study.example.org (default: relative links)",
    )
    p.add_argument(
        "--login-attempts-per-minute",
        type=c.nonnegative_int,
        default=10,
        help="wrong admin tokens per client address per minute before 429 (default 10; 0 = no limit)",
    )
    p.add_argument(
        "--participants-per-minute",
        type=c.nonnegative_int,
        default=30,
        help="new participants per client address per minute before 429 (default 30; 0 = no limit)",
    )
    p.add_argument(
        "--forwarded-allow-ips",
        help="reverse proxies (comma-separated IPs or networks) whose X-Forwarded-For is believed as the client "
        "address; default none: every limit counts the TCP peer, whatever headers a client sends",
    )
    p.set_defaults(func=_needs_web(_serve))

    p = hs.add_parser("export", help="write every participant's answers as CSV")
    p.add_argument("--study", type=Path, required=True, help="study folder")
    p.add_argument("--database", help="SQLAlchemy URL (default sqlite:///<study>/study.sqlite)")
    p.add_argument("--out", type=c.output_file, required=True, help="CSV file to write (atomically)")
    p.set_defaults(func=_needs_web(_export))

    p = hs.add_parser("score", help="Table 2 (accuracy per subset size), R² fit and plot (Fig. S5), sheets (Fig. S4)")
    p.add_argument("--study", type=Path, required=True, help="study folder")
    p.add_argument("--answers", type=Path, help="exported CSV (default: read the database)")
    p.add_argument("--database", help="SQLAlchemy URL (default sqlite:///<study>/study.sqlite)")
    p.add_argument("--out", type=c.output_dir, required=True, help="folder for scores.json and the figures")
    p.add_argument("--results", type=c.output_file, help="results CSV to append the per-participant accuracies to")
    p.add_argument("--model-name", default="human", help="model column of the results rows")
    p.add_argument("--dataset-key", help="dataset column of the results rows (default: the study's, e.g. cifar10:test)")
    p.add_argument("--include-partial", action="store_true", help="also count batches a participant did not finish")
    p.add_argument("--no-sheets", action="store_true", help="skip the image sheets")
    p.set_defaults(func=_needs_web(_score))


def _build(args: argparse.Namespace) -> int:
    from overinterp.data.specs import canonical_spec
    from overinterp.human.study import build_study, source_from_files, source_from_job

    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    sources = []
    for spec in args.model:
        if len(spec) == 3:
            # an existing file or folder as it is, else a dataset spec in its canonical form
            images = spec[2] if Path(spec[2]).exists() else canonical_spec(spec[2])
            sources.append(source_from_files(spec[0], spec[1], images, classes=classes))
        elif len(spec) == 2:
            sources.append(source_from_job(spec[0], spec[1], classes=classes))
        else:
            raise ValueError(f"--model takes NAME TRACE IMAGES or NAME JOB_DIR, got {spec}")
    m = build_study(
        sources,
        args.out,
        name=args.name,
        per_class=args.per_class,
        fractions=args.fractions,
        proportions=args.proportions,
        min_confidence=args.min_confidence,
        mask_style=args.mask_style,
        seed=args.seed,
        database_url=args.database,
        force=args.force,
    )
    mix = ", ".join(f"{x['name']} {x['quota']}" for x in m["models"])
    print(
        f"study {m['study_id']} in {args.out}: {len(m['items'])} images ({mix}), "
        f"{len(m['stimuli'])} stimuli at {', '.join(f'{100 * f:g}%' for f in m['fractions'])}"
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from overinterp.human.app import create_app

    token = args.admin_token or os.environ.get("OVERINTERP_ADMIN_TOKEN")
    generated = not token
    token = token or secrets.token_urlsafe(24)
    app = create_app(
        args.study,
        args.database,
        token,
        max_body=args.max_body,
        secure_cookies=args.secure_cookies,
        public_url=args.public_url,
        login_attempts_per_minute=args.login_attempts_per_minute,
        participants_per_minute=args.participants_per_minute,
        forwarded_allow_ips=args.forwarded_allow_ips,
    )
    if generated:
        print(f"admin token (none given): {token}", file=sys.stderr, flush=True)
    where = (args.public_url or f"http://{args.host}:{args.port}").rstrip("/")
    print(
        f"study {app.state.manifest['study_id']}: participants open {where}/ , admin {where}/admin",
        file=sys.stderr,
        flush=True,
    )
    # uvicorn's own proxy headers are off: by default it believes X-Forwarded-For from 127.0.0.1,
    # which would let any local client choose the address its rate limits count under
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, proxy_headers=False)
    except SystemExit as exc:  # uvicorn logs why it could not start (a port in use, an unknown host), then exits
        if exc.code in (None, 0):
            return 0
        raise UserInputError(f"the server could not listen on {args.host}:{args.port} (the line above says why)")
    return 0


def _engine_and_study(args: argparse.Namespace):
    """The study's manifest and its existing database, read-only: export and score never create a
    database nor record the study (a mistyped --database is an error, not an empty export)."""
    from overinterp.human import db as dbm
    from overinterp.human.study import load_manifest

    if args.database:  # a URL that cannot be opened is the error, whatever the study folder holds
        engine = dbm.make_engine(args.database, create=False)
        try:
            return engine, load_manifest(args.study)
        except BaseException:
            engine.dispose()
            raise
    manifest = load_manifest(args.study)
    engine = dbm.make_engine(dbm.default_database_url(args.study), create=False)
    return engine, manifest


def _export(args: argparse.Namespace) -> int:
    from overinterp._atomic import atomic_write_text
    from overinterp.human import db as dbm

    engine, manifest = _engine_and_study(args)
    try:
        text = dbm.export_csv(engine, manifest["study_id"])
    finally:
        engine.dispose()
    atomic_write_text(args.out, text)
    print(f"wrote {args.out} ({text.count(chr(10)) - 1} answers)")
    return 0


def _score(args: argparse.Namespace) -> int:
    from overinterp.human import db as dbm
    from overinterp.human.scoring import read_answers, score_study

    if args.answers is not None:
        answers = read_answers(args.answers)
    else:
        engine, manifest = _engine_and_study(args)
        try:
            answers = dbm.export_rows(engine, manifest["study_id"])
        finally:
            engine.dispose()
    report = score_study(
        args.study,
        answers,
        args.out,
        results=args.results,
        model=args.model_name,
        dataset=args.dataset_key,
        complete_only=not args.include_partial,
        sheets=not args.no_sheets,
    )
    print(f"study {report['study']}: human accuracy per subset size (mean ± std over participants)")
    for t in report["table2"]:
        print(
            f"  {100 * t['fraction']:g}% of pixels: {100 * t['mean']:.1f} ± {100 * t['std']:.1f}% "
            f"({t['participants']} participants)"
        )
    fit = report["fit"]
    r2 = "undefined" if fit["r2"] != fit["r2"] else f"{fit['r2']:.3f}"
    print(f"  linear fit over {fit['n']} points: R² = {r2}")
    print(
        f"wrote {Path(args.out) / 'scores.json'} and {len(report['files'])} figures"
        + (f"; appended {report['results_rows']} rows to {args.results}" if args.results else "")
    )
    return 0
