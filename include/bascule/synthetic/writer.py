"""The application that keeps writing to the synthetic registry during a migration.

:class:`Writer` stands in for the application: a separate process (``python -m
bascule.synthetic.cli write``) that inserts, updates and deletes rows (as the
application role), one transaction per change, and appends each outcome to a JSON
Lines log (:mod:`bascule.synthetic.writes_log`). A change is logged ``acknowledged``
only after COMMIT returned. Writes refused by the cutover freeze (read-only role) are
logged ``refused``: the writer keeps trying at a slow pace, so the freeze shows in the
log as the moment acknowledgements stop and refusals start.

No Airflow import. psycopg2 is imported by the functions that connect.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from bascule.synthetic.registry import (
    BIRTH_YEAR_MAX,
    BIRTH_YEAR_MIN,
    CARE_LEVELS,
    DISPENSATIONS,
    DSN_ENV,
    ENCOUNTERS,
    PATIENTS,
    PRIMARY_KEYS,
    SEX_CODES,
    STAYS,
    ident,
)
from bascule.synthetic.snds import ATC_CODES, CIP13_BY_ATC, DEPARTMENTS
from bascule.synthetic.writes_log import (
    ACKNOWLEDGED,
    DISCONNECTED,
    FAILED,
    IN_DOUBT,
    NOOP,
    REFUSED,
    LogWatching,
    WriterStats,
    last_seq,
    row_values,
    summarise_log,
)

# Relative frequencies of the writer's operations.
OPERATIONS: tuple[tuple[str, int], ...] = (
    ("insert_patient", 20),
    ("update_patient", 20),
    ("delete_patient", 5),
    ("insert_dispensation", 30),
    ("update_dispensation", 15),
    ("delete_dispensation", 10),
    ("insert_encounter", 15),
    ("update_encounter", 10),
    ("delete_encounter", 5),
)
_TABLE_OF = {"patient": PATIENTS, "dispensation": DISPENSATIONS, "encounter": ENCOUNTERS}
_REFUSED_SQLSTATES = {"25006", "42501"}  # read_only_sql_transaction, insufficient_privilege


class _Session:
    """One application session; reconnects when the server ends it (the freeze does)."""

    def __init__(self, dsn: str):
        self._dsn = dsn
        self.conn: Any = None

    def get(self) -> Any:
        import psycopg2

        if self.conn is None or self.conn.closed:
            self.conn = psycopg2.connect(self._dsn, application_name="bascule-synthetic-writer")
            self.conn.autocommit = False
        return self.conn

    def drop(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # already gone: nothing to release
                pass
        self.conn = None


class _Model:
    """What the writer knows of the database, to pick rows that exist."""

    def __init__(self, max_patient: int, max_dispensation: int, max_encounter: int = 1):
        self.base_patients = max(1, max_patient)  # populated patients: the writer never deletes these
        self.max_patient = max(1, max_patient)
        self.max_dispensation = max(1, max_dispensation)
        self.max_encounter = max(1, max_encounter)
        self.own_patients: list[int] = []  # inserted by this writer and never given a dispensation
        self.own_with_dispensations: set[int] = set()


def write_loop(
    dsn: str,
    log_path: str | Path,
    *,
    seed: int = 0,
    interval: float = 0.02,
    refused_interval: float = 0.5,
    max_ops: int | None = None,
    max_seconds: float | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> WriterStats:
    """Write to the registry until ``should_stop()``, ``max_ops`` attempts or ``max_seconds``.

    One change per transaction; every attempt is appended to ``log_path`` (JSON Lines,
    flushed per line) after its outcome is known. After a refusal or a lost session the
    writer waits ``refused_interval`` before the next attempt, otherwise ``interval``.
    """
    rng = random.Random(f"bascule-synthetic-writer:{seed}")
    names = [name for name, _ in OPERATIONS]
    weights = [weight for _, weight in OPERATIONS]
    session = _Session(dsn)
    model: _Model | None = None
    seq = last_seq(log_path)
    started = time.monotonic()
    attempts = 0
    with open(log_path, "a", encoding="utf-8") as log:

        def record(**fields: Any) -> str:
            nonlocal seq
            seq += 1
            entry = {"seq": seq, "at": datetime.now(UTC).isoformat(timespec="microseconds"), **fields}
            log.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")
            log.flush()
            return str(fields["status"])

        try:
            while not should_stop():
                if max_ops is not None and attempts >= max_ops:
                    break
                if max_seconds is not None and time.monotonic() - started >= max_seconds:
                    break
                attempts += 1
                status = FAILED
                try:
                    conn = session.get()
                    if model is None:
                        model = _read_model(conn)
                    op = rng.choices(names, weights)[0]
                    status = _attempt(conn, op, rng, model, record)
                except _LostSession as lost:
                    session.drop()
                    status = record(status=lost.status, error=lost.message, **lost.fields)
                except Exception as exc:  # could not connect, or read the model
                    session.drop()
                    status = record(status=FAILED, op="connect", error=_error_text(exc))
                _sleep(
                    refused_interval if status in (REFUSED, DISCONNECTED, IN_DOUBT, FAILED) else interval, should_stop
                )
        finally:
            session.drop()
    return summarise_log(log_path)


class _LostSession(Exception):
    def __init__(self, status: str, message: str, fields: dict[str, Any]):
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields


def _read_model(conn: Any) -> _Model:
    with conn.cursor() as cur:
        cur.execute(f"SELECT coalesce(max(patient_id), 1) FROM {PATIENTS}")
        max_patient = int(cur.fetchone()[0])
        cur.execute(f"SELECT coalesce(max(dispensation_id), 1) FROM {DISPENSATIONS}")
        max_dispensation = int(cur.fetchone()[0])
        cur.execute(_sql('SELECT coalesce(max("Id"), 1) FROM {}', ENCOUNTERS))
        max_encounter = int(cur.fetchone()[0])
    conn.rollback()
    return _Model(max_patient, max_dispensation, max_encounter)


def _sql(template: str, table: str) -> Any:
    """``template`` with ``{}`` as the table's identifier: a PascalCase name is quoted, never folded."""
    from psycopg2 import sql

    return sql.SQL(template).format(ident(table))


def _attempt(conn: Any, op: str, rng: random.Random, model: _Model, record: Callable[..., str]) -> str:
    """Run one change in its own transaction and log its outcome; returns the status."""
    import psycopg2

    action, _, noun = op.partition("_")
    table = _TABLE_OF[noun]
    statement, params = _statement(op, rng, model)
    fields: dict[str, Any] = {"op": action, "table": table}
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            names = [d[0] for d in cur.description]
            fetched = cur.fetchone()
    except psycopg2.Error as exc:
        _rollback_quietly(conn)
        if _session_lost(conn, exc):
            raise _LostSession(DISCONNECTED, _error_text(exc), fields) from exc
        status = REFUSED if exc.pgcode in _REFUSED_SQLSTATES else FAILED
        return str(record(status=status, error=_error_text(exc), **fields))
    if fetched is None:  # the row picked is gone (deleted earlier): nothing changed
        conn.rollback()
        return str(record(status=NOOP, **fields))
    row = row_values(names, fetched)
    key_column = PRIMARY_KEYS[table][0]
    fields.update(key=row[key_column], values=None if action == "delete" else row)
    try:
        conn.commit()
    except psycopg2.Error as exc:
        # The server may have committed before the session died: not acknowledged, not denied.
        _rollback_quietly(conn)
        raise _LostSession(IN_DOUBT, _error_text(exc), fields) from exc
    _update_model(model, op, row)
    return str(record(status=ACKNOWLEDGED, **fields))


def _statement(op: str, rng: random.Random, model: _Model) -> tuple[Any, tuple[Any, ...]]:
    if op == "insert_patient":
        pseudonym = f"{rng.getrandbits(64):016x}"
        sex = rng.choices(SEX_CODES, (49, 50, 1))[0]
        return (
            f"INSERT INTO {PATIENTS} (pseudonym, sex, birth_year, department) VALUES (%s, %s, %s, %s) RETURNING *",
            (pseudonym, sex, rng.randint(BIRTH_YEAR_MIN, BIRTH_YEAR_MAX), rng.choice(DEPARTMENTS)),
        )
    if op == "update_patient":  # a move to another department
        return (
            f"UPDATE {PATIENTS} SET department = %s WHERE patient_id = %s RETURNING *",
            (rng.choice(DEPARTMENTS), rng.randint(1, model.max_patient)),
        )
    if op == "delete_patient":  # a registration made by mistake, with nothing attached yet
        # Only the writer's own patients: the populated ones stay, so dispensations can reference them.
        patient = model.own_patients[rng.randrange(len(model.own_patients))] if model.own_patients else 0
        return (
            f"DELETE FROM {PATIENTS} p WHERE patient_id = %s"
            f" AND NOT EXISTS (SELECT FROM {STAYS} s WHERE s.patient_id = p.patient_id)"
            f" AND NOT EXISTS (SELECT FROM {DISPENSATIONS} d WHERE d.patient_id = p.patient_id) RETURNING *",
            (patient,),
        )
    if op == "insert_dispensation":
        live = [*model.own_patients, *model.own_with_dispensations]
        own = rng.random() < 0.2 and live
        patient = rng.choice(sorted(live)) if own else rng.randint(1, model.base_patients)
        atc = rng.choices([c for c, _ in ATC_CODES], [w for _, w in ATC_CODES])[0]
        return (
            f"INSERT INTO {DISPENSATIONS} (patient_id, atc_code, cip13, quantity, dispensed_on)"
            " VALUES (%s, %s, %s, %s, current_date) RETURNING *",
            (patient, atc, rng.choice(CIP13_BY_ATC[atc]), Decimal(rng.randint(25, 1000)) / 100),
        )
    if op == "update_dispensation":  # a corrected quantity
        return (
            f"UPDATE {DISPENSATIONS} SET quantity = %s, recorded_at = now() WHERE dispensation_id = %s RETURNING *",
            (Decimal(rng.randint(25, 1000)) / 100, rng.randint(1, model.max_dispensation)),
        )
    if op == "delete_dispensation":
        return (
            f"DELETE FROM {DISPENSATIONS} WHERE dispensation_id = %s RETURNING *",
            (rng.randint(1, model.max_dispensation),),
        )
    return _encounter_statement(op, rng, model)


def _encounter_statement(op: str, rng: random.Random, model: _Model) -> tuple[Any, tuple[Any, ...]]:
    # Encounters reference populated patients only: the writer's own patients stay deletable.
    if op == "insert_encounter":
        return (
            _sql(
                'INSERT INTO {} ("PatientId", "CareLevel", "StartedAt") VALUES (%s, %s, now()) RETURNING *', ENCOUNTERS
            ),
            (rng.randint(1, model.base_patients), rng.choice(CARE_LEVELS)),
        )
    if op == "update_encounter":  # the care level changed during the stay
        return (
            _sql('UPDATE {} SET "CareLevel" = %s WHERE "Id" = %s RETURNING *', ENCOUNTERS),
            (rng.choice(CARE_LEVELS), rng.randint(1, model.max_encounter)),
        )
    if op == "delete_encounter":
        return _sql('DELETE FROM {} WHERE "Id" = %s RETURNING *', ENCOUNTERS), (rng.randint(1, model.max_encounter),)
    raise ValueError(f"unknown writer operation {op!r}")


def _update_model(model: _Model, op: str, row: Mapping[str, Any]) -> None:
    if op == "insert_patient":
        model.own_patients.append(int(row["patient_id"]))
        model.max_patient = max(model.max_patient, int(row["patient_id"]))
    elif op == "delete_patient" and int(row["patient_id"]) in model.own_patients:
        model.own_patients.remove(int(row["patient_id"]))
    elif op == "insert_encounter":
        model.max_encounter = max(model.max_encounter, int(row["Id"]))
    elif op == "insert_dispensation":
        model.max_dispensation = max(model.max_dispensation, int(row["dispensation_id"]))
        patient = int(row["patient_id"])
        if patient in model.own_patients:  # no longer deletable
            model.own_patients.remove(patient)
            model.own_with_dispensations.add(patient)


def _session_lost(conn: Any, exc: Exception) -> bool:
    import psycopg2

    # 57P01 admin_shutdown: pg_terminate_backend; class 08: connection exceptions.
    code = getattr(exc, "pgcode", None) or ""
    return bool(conn.closed) or isinstance(exc, psycopg2.InterfaceError) or code == "57P01" or code.startswith("08")


def _rollback_quietly(conn: Any) -> None:
    try:
        if not conn.closed:
            conn.rollback()
    except Exception:  # the session is gone; the caller reconnects
        pass


def _error_text(exc: BaseException) -> str:
    code = getattr(exc, "pgcode", None)
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"{code} {text}" if code else f"{type(exc).__name__}: {text}"


def _sleep(seconds: float, should_stop: Callable[[], bool]) -> None:
    deadline = time.monotonic() + seconds
    while not should_stop():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.05))


class Writer(LogWatching):
    """The application, writing in a child process (``python -m bascule.synthetic.cli write``).

    ``dsn`` is the application role's libpq DSN; it reaches the child through the
    environment, never its command line. ``stop()`` asks the child to finish its
    current change (SIGTERM), so that the log holds every write it acknowledged.
    """

    def __init__(
        self,
        dsn: str,
        log_path: str | Path,
        *,
        seed: int = 0,
        interval: float = 0.02,
        refused_interval: float = 0.5,
        max_seconds: float = 3600.0,
    ):
        self.dsn = dsn
        self.log_path = Path(log_path)
        self.seed = seed
        self.interval = interval
        self.refused_interval = refused_interval
        self.max_seconds = max_seconds  # a forgotten writer ends on its own
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def stderr_path(self) -> Path:
        return self.log_path.with_name(self.log_path.name + ".stderr")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> Writer:
        if self.running:
            raise RuntimeError("writer already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.touch()
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env[DSN_ENV] = self.dsn
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        command = [
            sys.executable,
            "-m",
            "bascule.synthetic.cli",
            "write",
            "--log",
            str(self.log_path),
            "--seed",
            str(self.seed),
            "--interval",
            str(self.interval),
            "--refused-interval",
            str(self.refused_interval),
            "--max-seconds",
            str(self.max_seconds),
        ]
        with open(self.stderr_path, "ab") as stderr:
            self._process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
        return self

    def stop(self, timeout: float = 15.0) -> WriterStats:
        """End the child (SIGTERM, then SIGKILL after ``timeout``) and summarise its log."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        return self.stats()

    def _check_running(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"writer exited with code {self._process.returncode}: {self._stderr_tail()}")

    def _stderr_tail(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def __enter__(self) -> Writer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
