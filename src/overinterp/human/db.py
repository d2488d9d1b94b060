"""The study database (SQLAlchemy 2; SQLite by default, any SQLAlchemy URL works).

Tables: ``studies`` (one row per built study), ``stimuli`` (one masked image:
its opaque id, item, fraction, batch, label, model and file), ``participants``
(opaque id, sequential number, presentation order) and ``answers`` (one per
participant × stimulus, unique also per participant × position, timestamped).

SQLite runs in WAL mode with ``synchronous=FULL`` and each answer is committed
on its own, so answers survive a crash or ``kill -9`` of the server.
"""

from __future__ import annotations

import csv
import io
import json
import random
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    inspect,
    select,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import StaticPool

from overinterp.errors import InputNotFoundError, UserInputError

__all__ = [
    "Base",
    "Study",
    "Stimulus",
    "Participant",
    "Answer",
    "default_database_url",
    "make_engine",
    "register_study",
    "create_participant",
    "participant_order",
    "record_answer",
    "AnswerError",
    "export_rows",
    "export_csv",
    "EXPORT_COLUMNS",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _iso(t: datetime | None) -> str:
    if t is None:
        return ""
    if t.tzinfo is None:  # SQLite returns naive datetimes; they were written in UTC
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Base(DeclarativeBase):
    pass


class Study(Base):
    __tablename__ = "studies"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    classes_json: Mapped[str] = mapped_column(Text)
    fractions_json: Mapped[str] = mapped_column(Text)
    num_items: Mapped[int] = mapped_column(Integer)


class Stimulus(Base):
    __tablename__ = "stimuli"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"), index=True)
    item_id: Mapped[str] = mapped_column(String(64))
    fraction: Mapped[float] = mapped_column(Float)
    batch: Mapped[int] = mapped_column(Integer)
    label: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(200))
    dataset: Mapped[str] = mapped_column(String(500))
    position: Mapped[int] = mapped_column(Integer)
    file: Mapped[str] = mapped_column(String(200))


class Participant(Base):
    __tablename__ = "participants"
    __table_args__ = (UniqueConstraint("study_id", "number"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    order_json: Mapped[str] = mapped_column(Text)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Answer(Base):
    __tablename__ = "answers"
    __table_args__ = (UniqueConstraint("participant_id", "stimulus_id"), UniqueConstraint("participant_id", "position"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    participant_id: Mapped[str] = mapped_column(ForeignKey("participants.id"), index=True)
    stimulus_id: Mapped[str] = mapped_column(ForeignKey("stimuli.id"))
    position: Mapped[int] = mapped_column(Integer)
    choice: Mapped[int] = mapped_column(Integer)
    answered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    response_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)


def default_database_url(study_dir: str | Path) -> str:
    """``sqlite:///<study_dir>/study.sqlite`` (absolute path)."""
    return f"sqlite:///{(Path(study_dir).resolve() / 'study.sqlite').as_posix()}"


def make_engine(url: str, *, create: bool = True) -> Engine:
    """An engine for ``url`` with the tables created; SQLite in WAL mode, synchronous=FULL.

    ``create=False`` (read-only commands: export, score) opens an existing database only:
    a SQLite file that does not exist, or a database without the study tables, is a
    ``FileNotFoundError`` naming it, and nothing is created.
    """
    try:
        u = make_url(url)
        u.get_dialect().import_dbapi()  # an unknown dialect or a missing driver fails here, before anything is made
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise UserInputError(
            f"{url!r} is not a database URL this Python can open (sqlite:///path/study.sqlite; other "
            f"databases need their SQLAlchemy driver installed): {exc}",
            argument="database_url",
        ) from None
    if u.get_backend_name() == "sqlite":
        memory = u.database in (None, "", ":memory:")
        if not create and (memory or not Path(u.database).is_file()):
            where = "an in-memory database" if memory else f"no database file {u.database}"
            raise InputNotFoundError(
                f"{url}: {where} — nothing to read (is the URL right? `overinterp human build` "
                "or `serve` creates the database)",
                argument="database_url",
            )
        if not memory:
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            **({"poolclass": StaticPool} if memory else {}),
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            if not memory:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
    else:
        engine = create_engine(url, pool_pre_ping=True)
    try:
        if create:
            Base.metadata.create_all(engine)
            return engine
        missing = [t for t in Base.metadata.tables if not inspect(engine).has_table(t)]
    except (OperationalError, DBAPIError) as exc:
        engine.dispose()
        raise UserInputError(
            f"cannot open the database {u.render_as_string(hide_password=True)}: {str(exc.orig or exc).strip()}",
            argument="database_url",
        ) from None
    except Exception:
        engine.dispose()
        raise
    if missing:
        engine.dispose()
        raise InputNotFoundError(
            f"{url}: not a study database (no tables {', '.join(missing)}); nothing was changed",
            argument="database_url",
        )
    return engine


def register_study(engine: Engine, manifest: dict[str, Any]) -> bool:
    """Record a study and its stimuli (idempotent); True when it was new."""
    labels = {it["item"]: it for it in manifest["items"]}
    with Session(engine) as s:
        if s.get(Study, manifest["study_id"]) is not None:
            n = s.scalar(select(func.count()).select_from(Stimulus).where(Stimulus.study_id == manifest["study_id"]))
            if n != len(manifest["stimuli"]):
                raise ValueError(
                    f"study {manifest['study_id']} is in the database with {n} stimuli, "
                    f"the manifest has {len(manifest['stimuli'])}"
                )
            return False
        s.add(
            Study(
                id=manifest["study_id"],
                name=manifest["name"],
                created_at=utcnow(),
                classes_json=json.dumps(manifest["classes"]),
                fractions_json=json.dumps(manifest["fractions"]),
                num_items=len(manifest["items"]),
            )
        )
        s.flush()
        for st in manifest["stimuli"]:
            item = labels[st["item"]]
            s.add(
                Stimulus(
                    id=st["id"],
                    study_id=manifest["study_id"],
                    item_id=st["item"],
                    fraction=st["fraction"],
                    batch=st["batch"],
                    label=item["label"],
                    model=item["model"],
                    dataset=item["dataset"],
                    position=item["position"],
                    file=st["file"],
                )
            )
        s.commit()
    return True


def participant_order(stimuli: list[Stimulus], rng: random.Random) -> list[str]:
    """Stimulus ids batch by batch (increasing subset size), shuffled within each batch."""
    batches: dict[int, list[str]] = {}
    for st in sorted(stimuli, key=lambda x: (x.batch, x.id)):
        batches.setdefault(st.batch, []).append(st.id)
    order: list[str] = []
    for b in sorted(batches):
        ids = batches[b]
        rng.shuffle(ids)
        order += ids
    return order


def create_participant(engine: Engine, study_id: str) -> Participant:
    """A new participant with an opaque id and their own shuffled order."""
    for _ in range(20):
        with Session(engine, expire_on_commit=False) as s:
            stimuli = list(s.scalars(select(Stimulus).where(Stimulus.study_id == study_id)))
            if not stimuli:
                raise ValueError(f"study {study_id} has no stimuli in the database")
            number = (s.scalar(select(func.max(Participant.number)).where(Participant.study_id == study_id)) or 0) + 1
            rng = random.Random(secrets.randbits(64))
            p = Participant(
                id=secrets.token_urlsafe(18),
                study_id=study_id,
                number=number,
                created_at=utcnow(),
                order_json=json.dumps(participant_order(stimuli, rng)),
            )
            s.add(p)
            try:
                s.commit()
                return p
            except IntegrityError:  # two participants took the same number at once: try again
                s.rollback()
    raise RuntimeError("could not allocate a participant number")


class AnswerError(Exception):
    """An answer the server refuses; ``status`` is the HTTP status to send."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def record_answer(
    engine: Engine,
    participant_id: str,
    stimulus_id: str,
    choice: int,
    position: int,
    num_classes: int,
    response_ms: int | None = None,
) -> tuple[Answer, bool]:
    """Store one answer (committed on its own); return it and whether it was a repeat.

    The answer must be for the participant's current question (``position`` =
    number answered so far, ``stimulus_id`` = the stimulus at that position).
    Re-sending a stored answer with the same choice is a no-op; a different
    choice for an answered question, or any other question, is refused (409).
    """
    if not (0 <= choice < num_classes):
        raise AnswerError(422, f"choice must be a class index 0..{num_classes - 1}")
    with Session(engine, expire_on_commit=False) as s:
        p = s.get(Participant, participant_id)
        if p is None:
            raise AnswerError(404, "unknown participant")
        order = json.loads(p.order_json)
        # count first, then look for this answer: a concurrent commit between the two reads
        # then shows up as a repeat, never as "out of order"
        done = s.scalar(select(func.count()).select_from(Answer).where(Answer.participant_id == participant_id)) or 0
        prior = s.scalars(
            select(Answer).where(Answer.participant_id == participant_id, Answer.stimulus_id == stimulus_id)
        ).first()
        if prior is not None:
            if prior.choice == choice and prior.position == position:
                return prior, True
            raise AnswerError(409, "this question was already answered; answers cannot be changed")
        if done >= len(order):
            raise AnswerError(409, "the study is already complete for this participant")
        if position != done or order[done] != stimulus_id:
            raise AnswerError(409, f"out of order: the current question is number {done + 1}; reload the page")
        a = Answer(
            participant_id=participant_id,
            stimulus_id=stimulus_id,
            position=position,
            choice=choice,
            answered_at=utcnow(),
            response_ms=response_ms,
        )
        s.add(a)
        if done + 1 == len(order):
            p.completed_at = a.answered_at
        try:
            s.commit()
        except IntegrityError:  # the same answer raced in from another request
            s.rollback()
            prior = s.scalars(
                select(Answer).where(Answer.participant_id == participant_id, Answer.stimulus_id == stimulus_id)
            ).first()
            if prior is not None and prior.choice == choice and prior.position == position:
                return prior, True
            raise AnswerError(409, "another answer for this question was stored first; reload the page") from None
        return a, False


EXPORT_COLUMNS = (
    "study",
    "participant",
    "participant_number",
    "participant_started_at",
    "participant_completed_at",
    "position",
    "batch",
    "fraction",
    "stimulus",
    "item",
    "model",
    "dataset",
    "dataset_position",
    "label",
    "label_name",
    "choice",
    "choice_name",
    "correct",
    "answered_at",
    "response_ms",
)


def export_rows(engine: Engine, study_id: str) -> list[dict[str, Any]]:
    """Every answer of a study, one dict per answer (participants by number, then position)."""
    with Session(engine) as s:
        study = s.get(Study, study_id)
        if study is None:
            raise ValueError(f"study {study_id} is not in the database")
        classes = json.loads(study.classes_json)
        q = (
            select(Answer, Participant, Stimulus)
            .join(Participant, Answer.participant_id == Participant.id)
            .join(Stimulus, Answer.stimulus_id == Stimulus.id)
            .where(Participant.study_id == study_id)
            .order_by(Participant.number, Answer.position)
        )
        rows = []
        for a, p, st in s.execute(q):
            rows.append(
                {
                    "study": study_id,
                    "participant": p.id,
                    "participant_number": p.number,
                    "participant_started_at": _iso(p.created_at),
                    "participant_completed_at": _iso(p.completed_at),
                    "position": a.position,
                    "batch": st.batch,
                    "fraction": st.fraction,
                    "stimulus": st.id,
                    "item": st.item_id,
                    "model": st.model,
                    "dataset": st.dataset,
                    "dataset_position": st.position,
                    "label": st.label,
                    "label_name": classes[st.label],
                    "choice": a.choice,
                    "choice_name": classes[a.choice],
                    "correct": int(a.choice == st.label),
                    "answered_at": _iso(a.answered_at),
                    "response_ms": "" if a.response_ms is None else a.response_ms,
                }
            )
        return rows


def export_csv(engine: Engine, study_id: str) -> str:
    """:func:`export_rows` as CSV text with the :data:`EXPORT_COLUMNS` header."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(export_rows(engine, study_id))
    return buf.getvalue()
