"""The run store: SQLite in WAL mode under $DIMALIGN_HOME (runs, per-step metrics, artifacts).
It is the only module that speaks SQL: the rest of dimalign calls its methods.

A run has a kind: "unlearn" (a method on a config's baselines), "baselines" (train or load
and evaluate the original and retrained models, one job per share key that every owner waits
on), "embed" (the aligned UMAP of a finished run's features) or "audit" (a finished run's
layer-wise geometry, membership evidence, relearn attack and class view). Each records the
experiment it belongs to (same data, split, model and baselines), written at submit, so pages
list an experiment's runs with one indexed query.

Many processes use it at once — the app, the scheduler, one worker per job, CLI commands — so
every connection waits on locks (busy timeout) instead of failing, and writers take the lock
up front (BEGIN IMMEDIATE) so two writers never deadlock upgrading a read lock. Tensors and
checkpoints live as files in the run's folder; the store indexes them.

A store file that is empty, truncated or not a database is refused with a StoreError naming it
and saying how to start afresh; it is never overwritten. On a full disk the store can still be
read, and a write raises `checked.DiskFull` ("disk full at PATH").

A workshop's challenges live here too: the instructor publishes one (an experiment, the methods
allowed, the score it ranks by, an optional time budget), participants enter finished runs of
their own, and the store is where an entry is checked (`entry_refusal`), in the transaction
that records it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from dimalign import paths
from dimalign.checked import DiskFull, is_disk_full

SCHEMA_VERSION = 5
MIN_SQLITE = (3, 25)  # ROW_NUMBER() OVER, which `ready_heads` uses
STATUSES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
ACTIVE = ("queued", "running")
_ID = re.compile(r"^[0-9a-f]{12}$")
_OWNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_KEY = re.compile(r"^[A-Za-z0-9_-]{22,128}$")  # token_urlsafe(16) or longer: >= 128 bits

# Owner names with a meaning of their own. The web app refuses all of them as a participant's
# name (tests/test_hostile.py); the engine refuses SHARED_OWNER and ADMIN_OWNER in submit.
SHARED_OWNER = "shared"  # owner of the baselines jobs every owner waits on (jobs.submit_baselines)
ADMIN_OWNER = "admin"  # the instructor's read-only view of every run (the web app)
LOCAL_OWNER = "local"  # the CLI's default owner: the machine's own user
SWEEP_OWNER = "sweep"  # `dimalign sweep`'s default owner
RESERVED_OWNERS = frozenset({SHARED_OWNER, ADMIN_OWNER, LOCAL_OWNER, SWEEP_OWNER})

# a workshop's challenges (schema 5)
_CHALLENGES = """
CREATE TABLE IF NOT EXISTS challenges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    instructions TEXT NOT NULL,       -- markdown
    preset TEXT NOT NULL,             -- its experiment: a preset and the overrides below
    overrides TEXT NOT NULL,          -- JSON list of override texts
    experiments TEXT NOT NULL,        -- JSON list: the experiment keys of every replicate
    methods TEXT NOT NULL,            -- JSON list: the methods an entry may have run
    metric TEXT NOT NULL,             -- the score entries are ranked by (room.SCORES)
    budget REAL,                      -- minutes from opening an entry must be made in, or NULL
    created REAL NOT NULL,
    opened REAL NOT NULL,             -- when it was published: its budget's start (opening it
                                      -- again does not move it)
    closed REAL,                      -- NULL while it is open
    revealed_run TEXT REFERENCES runs(id),  -- the entry whose settings everyone is shown
    changed REAL NOT NULL             -- moves with every change of the above (the pages watch)
);
CREATE UNIQUE INDEX IF NOT EXISTS challenges_one_open ON challenges((closed IS NULL))
    WHERE closed IS NULL;
CREATE TABLE IF NOT EXISTS submissions (
    challenge_id INTEGER NOT NULL REFERENCES challenges(id),
    run_id TEXT NOT NULL REFERENCES runs(id),
    owner TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (challenge_id, run_id)
);
"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    parent_id TEXT REFERENCES runs(id),
    depends_on TEXT REFERENCES runs(id),
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,               -- 'unlearn', 'baselines', 'embed' or 'audit'
    preset TEXT NOT NULL,
    method TEXT NOT NULL,
    config TEXT NOT NULL,             -- JSON of the validated config
    share_key TEXT,                   -- baselines: one job per key, shared by every owner
    executor TEXT NOT NULL DEFAULT 'local',  -- what runs it: 'local' (a worker here) or 'ray'
    status TEXT NOT NULL,
    device TEXT,
    pid INTEGER,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    heartbeat REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    progress REAL,                    -- 0..1 of the current phase
    phase TEXT,                       -- what the worker is doing: original, retrained, unlearn
    result TEXT,                      -- JSON: the run's metrics when done
    experiment TEXT,                  -- its experiment (train.experiment_key), NULL if none
    sweep TEXT                        -- the sweep that queued it (sweep.new_sweep_id), or NULL
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status, created);
CREATE INDEX IF NOT EXISTS runs_share ON runs(share_key);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL REFERENCES runs(id),
    step INTEGER NOT NULL,
    key TEXT NOT NULL,
    value REAL,
    wall REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_run_key ON metrics(run_id, key, step);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL REFERENCES runs(id),
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS owners (
    name TEXT PRIMARY KEY,            -- an owner name the web app has handed out or claimed
    key_hash TEXT NOT NULL,           -- sha256 of the owner's key (the key itself is not kept)
    created REAL NOT NULL
);
""" + _CHALLENGES

# indexes on columns that a migration adds: created after the migrations have run
_LATE_SCHEMA = """
CREATE INDEX IF NOT EXISTS runs_experiment ON runs(experiment, kind, created);
CREATE INDEX IF NOT EXISTS runs_sweep ON runs(sweep);
CREATE INDEX IF NOT EXISTS runs_owner ON runs(owner, status);
"""


def _add_experiment(db: sqlite3.Connection) -> None:
    """1 -> 2: the experiment key becomes a column, filled in once from each run's stored
    config (a config that no longer validates gets NULL: it belongs to no experiment); an
    embedding belongs to the experiment of the run it embeds."""
    from dimalign.train import stored_experiment_key  # only here: it imports torch

    db.execute("ALTER TABLE runs ADD COLUMN experiment TEXT")
    rows = db.execute("SELECT id, config FROM runs WHERE kind != 'embed'").fetchall()
    db.executemany("UPDATE runs SET experiment = ? WHERE id = ?",
                   [(stored_experiment_key(json.loads(config)), run_id)
                    for run_id, config in rows])
    db.execute("UPDATE runs SET experiment = (SELECT source.experiment FROM runs AS source "
               "WHERE source.id = runs.parent_id) WHERE kind = 'embed'")


def _add_owners(db: sqlite3.Connection) -> None:
    """2 -> 3: the owners table (name, hash of its key), for the web app's owner keys. Owners
    of earlier runs have no key yet: the first web visitor to use such a name claims it."""
    db.execute("CREATE TABLE IF NOT EXISTS owners (name TEXT PRIMARY KEY, "
               "key_hash TEXT NOT NULL, created REAL NOT NULL)")


def _add_sweep(db: sqlite3.Connection) -> None:
    """3 -> 4: the sweep a run belongs to, so a whole sweep can be listed and cancelled.
    Earlier runs belong to none."""
    db.execute("ALTER TABLE runs ADD COLUMN sweep TEXT")


def _add_challenges(db: sqlite3.Connection) -> None:
    """4 -> 5: the challenges an instructor publishes and the runs entered in them (none yet).
    Nothing is left to do here: schema 5 adds two new tables and no column to an old one, and
    `_SCHEMA` (which holds them, `CREATE ... IF NOT EXISTS`) runs at every opening before the
    migrations, so a schema 4 store has them by now. The step stays so that every version has
    its migration and the version moves 4 -> 5 in the same transaction."""


# MIGRATIONS[v] upgrades a store at version v to v + 1, inside the opening write transaction
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _add_experiment, 2: _add_owners, 3: _add_sweep, 4: _add_challenges}


def _run_script(db: sqlite3.Connection, script: str) -> None:
    # executescript would commit the open transaction; run statement by statement instead
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


class StoreError(ValueError):
    """Bad input to the store (an unknown run, a malformed id or owner), or a damaged store."""


class OwnerRefused(StoreError):
    """A caller who does not hold an owner's key asked to act as that owner."""


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _ID.match(run_id):
        raise StoreError(f"not a run id: {run_id!r} (12 hex characters, see `dimalign runs`)")
    return run_id


def check_sweep_id(sweep: str) -> str:
    if not isinstance(sweep, str) or not _ID.match(sweep):
        raise StoreError(f"not a sweep id: {sweep!r} (12 hex characters, the first line "
                         "`dimalign sweep` prints)")
    return sweep


def check_owner(owner: str) -> str:
    if not isinstance(owner, str) or not _OWNER.match(owner):
        raise StoreError(f"owner {owner!r} is not allowed: use 1-64 letters, digits, '_', "
                         "'.', '@' or '-', starting with a letter or digit")
    return owner


def is_reserved_owner(owner: str) -> bool:
    """Whether `owner` is one of RESERVED_OWNERS, in any case ("Shared" looks the same)."""
    return owner.lower() in RESERVED_OWNERS


def is_owner_key(key: str | None) -> bool:
    """Whether `key` has the form of an owner key (22-128 URL-safe characters)."""
    return isinstance(key, str) and bool(_KEY.match(key))


def new_owner_key() -> str:
    """A fresh owner key: 128 random bits, URL-safe (22 characters)."""
    return secrets.token_urlsafe(16)


def _key_hash(key: str) -> str:
    # a key is 128 random bits, so a plain hash is enough: no salt or slow hash to resist
    # guessing, which 2**128 candidates already do
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class Run:
    id: str
    parent_id: str | None
    depends_on: str | None
    owner: str
    kind: str
    preset: str
    method: str
    config: dict
    share_key: str | None
    executor: str
    status: str
    device: str | None
    pid: int | None
    created: float
    started: float | None
    finished: float | None
    heartbeat: float | None
    cancel_requested: bool
    error: str | None
    progress: float | None
    phase: str | None
    result: dict | None
    experiment: str | None = None
    sweep: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in ("done", "failed", "cancelled")

    @property
    def folder(self) -> Path:
        return paths.runs_dir() / self.id  # the id is checked: never user text


def _row_to_run(row: sqlite3.Row, extra: tuple[str, ...] = ()) -> Run:
    d = dict(row)
    for column in extra:  # a query's own columns, not the run's
        d.pop(column)
    d["config"] = json.loads(d["config"])
    d["result"] = json.loads(d["result"]) if d["result"] else None
    d["cancel_requested"] = bool(d["cancel_requested"])
    return Run(**d)


@dataclass(frozen=True)
class Challenge:
    """A challenge the instructor published: entries are finished runs of `experiments` (its
    replicates' keys) by one of `methods`, ranked by `metric`; with a `budget` (minutes), only
    runs queued after it was published (`opened`) and finished within the budget. Closing and
    opening it again moves neither: one rule for every entry, whenever it is made."""

    id: int
    title: str
    instructions: str  # markdown
    preset: str
    overrides: list[str]
    experiments: list[str]
    methods: list[str]
    metric: str
    budget: float | None
    created: float
    opened: float
    closed: float | None
    revealed_run: str | None
    changed: float

    @property
    def open(self) -> bool:
        return self.closed is None

    @property
    def deadline(self) -> float | None:
        """When the budget runs out (a time.time()), or None without a budget."""
        return None if self.budget is None else self.opened + 60.0 * self.budget


def _row_to_challenge(row: sqlite3.Row) -> Challenge:
    d = dict(row)
    for column in ("overrides", "experiments", "methods"):
        d[column] = json.loads(d[column])
    return Challenge(**d)


def entry_refusal(challenge: Challenge, run: Run, owner: str) -> str | None:
    """Why `owner` may not enter `run` in `challenge`, in one line; None when it may. The
    store asks it in the transaction that records an entry (`submit_to_challenge`)."""
    from dimalign.contest import score_name  # pure Python, imported here only: the board's
    from dimalign.room import FINAL, complete  # rules of a result it can rank

    if not challenge.open:
        return f"the challenge {challenge.title!r} is closed"
    if run.owner != owner:
        return f"run {run.id} is not yours"
    if run.kind != "unlearn":
        return f"run {run.id} is not an unlearning run"
    if run.status != "done":
        return f"run {run.id} is {run.status}: only a finished run can be entered"
    if not complete(run):
        return (f"run {run.id} has no complete result to rank: it lacks the unlearned or "
                "retrained model's evaluation, or its times")
    result = run.result
    if challenge.metric == FINAL:
        if not {"unlearned", "retrained"} <= set(result.get("forget_confidence") or {}):
            return f"run {run.id} kept no forget confidences: it cannot have a final score"
    elif not _finite(result["models"]["unlearned"].get(challenge.metric)):
        return (f"run {run.id} has no {score_name(challenge.metric)} to rank: its result "
                "holds none that is a number")
    if run.method not in challenge.methods:
        return (f"run {run.id} ran {run.method}; this challenge allows "
                f"{', '.join(challenge.methods)}")
    if run.experiment not in challenge.experiments:
        settings = " ".join(challenge.overrides)
        return (f"run {run.id} is of another experiment than the challenge's "
                f"({challenge.preset}{' ' + settings if settings else ''}): its data, forget "
                "set, seed or model differ; run on the challenge's experiment (the banner's "
                "*Use the challenge's experiment*) and enter that run")
    if challenge.budget is not None:
        minutes = f"{challenge.budget:g}-minute"
        if run.created < challenge.opened:
            return f"run {run.id} was queued before the challenge's {minutes} budget began"
        if run.finished is None or run.finished > challenge.deadline:
            return f"run {run.id} finished after the challenge's {minutes} budget ran out"
    return None


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and \
        math.isfinite(value)


# what SQLite says when the disk is full (at a write, or when it maps its shared memory file)
_NO_SPACE = ("SQLITE_FULL", "SQLITE_IOERR_SHMSIZE")


def _no_space(err: sqlite3.Error) -> bool:
    return getattr(err, "sqlite_errorname", "") in _NO_SPACE or "disk is full" in str(err)


def _corrupt(err: sqlite3.Error) -> bool:
    name = getattr(err, "sqlite_errorname", "")
    return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or \
        "malformed" in str(err) or "not a database" in str(err)


def damaged_store(path: Path, why: str) -> StoreError:
    """The one line a damaged store file gives: what is wrong and how to start afresh."""
    return StoreError(f"the run store {path} is damaged ({why}); it was left as it is. Move it "
                      f"aside (mv {path} {path}.bak, with its -wal and -shm files if there) and "
                      f"the next start makes a new, empty store; the run folders under "
                      f"{paths.runs_dir()} are kept")


def _close(db: sqlite3.Connection | None) -> None:
    if db is not None:
        with suppress(sqlite3.Error):
            db.close()


@contextmanager
def _transaction(db: sqlite3.Connection, path: Path):
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error; DiskFull when the disk is full."""
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    except sqlite3.OperationalError as err:
        if db.in_transaction:
            db.execute("ROLLBACK")
        if _no_space(err):
            raise DiskFull(path) from None
        raise


class Store:
    """A connection to the run store. A new store file is built under another name and linked
    into place whole, so a store file is never empty: an empty, truncated or foreign file is
    reported (StoreError) and never overwritten. Opening a store whose schema is current
    writes nothing; when the disk is full it is opened read-only (writes raise DiskFull, and
    it becomes writable again once there is space)."""

    RETRY_SECONDS = 1.0  # how often a read-only store tries to become writable again

    def __init__(self, path: Path | None = None, timeout: float = 60.0):
        if sqlite3.sqlite_version_info < MIN_SQLITE:  # window functions (the fair queue)
            raise StoreError(f"the run store needs SQLite {'.'.join(map(str, MIN_SQLITE))} or "
                             f"newer; this Python has {sqlite3.sqlite_version}")
        self.path = Path(path) if path else paths.home() / "runs.sqlite"
        self.timeout = timeout
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            if is_disk_full(err):
                raise DiskFull(self.path.parent) from None
            raise
        if not self.path.exists():
            self._create()
        self._db, self.read_only = self._connect()
        self._retry_at = time.monotonic() + self.RETRY_SECONDS

    @property
    def db(self) -> sqlite3.Connection:
        if self.read_only and time.monotonic() >= self._retry_at:
            self._retry_at = time.monotonic() + self.RETRY_SECONDS
            self._reopen()
        return self._db

    def _open(self, target: str, uri: bool = False) -> sqlite3.Connection:
        db = sqlite3.connect(target, timeout=self.timeout, isolation_level=None,
                             check_same_thread=False, uri=uri)
        db.row_factory = sqlite3.Row
        db.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        db.execute("PRAGMA foreign_keys = ON")
        return db

    @staticmethod
    def _wal(db: sqlite3.Connection) -> None:
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")  # WAL stays consistent after a crash

    def _create(self) -> None:
        """Build an empty store beside the path and link it into place (when another process
        got there first, its store is used)."""
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.{secrets.token_hex(3)}.new")
        try:
            db = self._open(str(tmp))
            try:
                self._wal(db)
                self._migrate(db)
            finally:
                db.close()
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass
            except OSError as err:  # a file system without hard links
                if is_disk_full(err) or self.path.exists():
                    raise
                os.rename(tmp, self.path)
        except sqlite3.OperationalError as err:
            if _no_space(err):
                raise DiskFull(self.path) from None
            raise
        except OSError as err:
            if is_disk_full(err):
                raise DiskFull(self.path) from None
            raise
        finally:
            for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                leftover.unlink(missing_ok=True)

    def _check_empty(self) -> None:
        """An empty file is not a store (SQLite would silently make it a new, empty one). The
        file is looked at with stat only: opening and closing a file descriptor of it would
        drop the locks SQLite holds on it in this process (and corrupt the store)."""
        if self.path.stat().st_size == 0:
            raise damaged_store(self.path, "the file is empty: 0 bytes")

    def _check_length(self, db: sqlite3.Connection) -> None:
        """With nothing in the write-ahead log, every page is in the file: a file shorter than
        its page count was truncated (SQLite would say so only on reading a missing page)."""
        wal = Path(f"{self.path}-wal")
        if wal.exists() and wal.stat().st_size > 0:
            return  # pages may live in the log: nothing to compare
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        size = self.path.stat().st_size
        if pages * page_size > size:  # or a commit came in since the look at the log:
            row = db.execute("PRAGMA quick_check(1)").fetchone()  # a missing page raises
            if row[0] != "ok":
                raise damaged_store(self.path, f"truncated: {size} of {pages * page_size} "
                                    f"bytes; {row[0]}")

    def _connect(self) -> tuple[sqlite3.Connection, bool]:
        """(a connection, whether it is read-only: the disk is full)."""
        db = None
        try:
            self._check_empty()
            db = self._open(str(self.path))
            self._wal(db)
            self._check_length(db)
            self._migrate(db)
            return db, False
        except sqlite3.DatabaseError as err:
            _close(db)
            if _corrupt(err):
                why = "not a SQLite database" if "not a database" in str(err) else \
                    f"truncated or corrupt: {err}"
                raise damaged_store(self.path, why) from None
            if not _no_space(err):
                raise
            return self._open_read_only(), True
        except BaseException:
            _close(db)
            raise

    def _open_read_only(self) -> sqlite3.Connection:
        """The disk is full: SQLite cannot make its shared-memory file. Read the store file
        as it is (nothing may be waiting in its write-ahead log) and write nothing."""
        wal = Path(f"{self.path}-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise DiskFull(self.path)  # the log holds commits only SQLite can read back
        db = self._open(self.path.resolve().as_uri() + "?immutable=1", uri=True)
        if self._stored_version(db) != SCHEMA_VERSION:
            db.close()
            raise DiskFull(self.path)  # it needs upgrading, which writes
        return db

    def _reopen(self) -> None:
        """Writable again if there is space now; else keep the read-only connection."""
        try:
            db, read_only = self._connect()
        except (DiskFull, sqlite3.Error):
            return
        self._db.close()
        self._db, self.read_only = db, read_only

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def write(self):
        """A write transaction that takes the lock up front; DiskFull when the disk is full."""
        if self.read_only:
            self._reopen()
            if self.read_only:
                raise DiskFull(self.path)
        with _transaction(self._db, self.path) as db:
            yield db

    @staticmethod
    def _stored_version(db: sqlite3.Connection) -> int | None:
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.OperationalError as err:  # a new file: no tables yet
            if _no_space(err):
                raise
            return None
        return int(row[0]) if row else None

    def _migrate(self, db: sqlite3.Connection) -> None:
        stored = self._stored_version(db)
        if stored == SCHEMA_VERSION:
            return  # current: opening writes nothing (so a full disk can still be read)
        if stored is not None and stored < SCHEMA_VERSION:
            import dimalign.train  # noqa: F401 - what a migration imports (torch), before the lock
        with _transaction(db, self.path):
            _run_script(db, _SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row[0]) if row else SCHEMA_VERSION
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} was written by a newer dimalign (schema "
                                 f"{version}); upgrade dimalign to read it")
            while version < SCHEMA_VERSION:
                MIGRATIONS[version](db)
                version += 1
            _run_script(db, _LATE_SCHEMA)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (version,))

    # ------------------------------------------------------------------------ runs

    def create_run(self, *, owner: str, kind: str, preset: str, method: str, config: dict,
                   parent_id: str | None = None, depends_on: str | None = None,
                   share_key: str | None = None, status: str = "queued",
                   executor: str = "local", experiment: str | None = None,
                   sweep: str | None = None) -> str:
        """A new run; returns its id. `experiment`: the key of the experiment it belongs to
        (train.experiment_key), listed by `runs(experiment=...)`; `sweep`: the sweep that
        queued it (`runs(sweep=...)`, `cancel_sweep`)."""
        fields = dict(owner=owner, kind=kind, preset=preset, method=method, config=config,
                      parent_id=parent_id, depends_on=depends_on, share_key=share_key,
                      status=status, executor=executor, experiment=experiment, sweep=sweep)
        with self.write() as db:
            return self._insert(db, **fields)

    def find_or_create_run(self, *, share_key: str, reuse: tuple[str, ...] = ACTIVE,
                           **fields) -> str:
        """The newest run with this share key whose status is one of `reuse`, else a new one
        made from `fields` (create_run's arguments). Looked up and inserted in one write
        transaction: callers racing in other processes get the same run, never two."""
        with self.write() as db:
            row = db.execute(
                f"SELECT id FROM runs WHERE share_key = ? AND status IN "
                f"({','.join('?' * len(reuse))}) ORDER BY created DESC LIMIT 1",
                (share_key, *reuse)).fetchone()
            if row is not None:
                return row[0]
            return self._insert(db, share_key=share_key, **fields)

    @staticmethod
    def _insert(db: sqlite3.Connection, *, owner: str, kind: str, preset: str, method: str,
                config: dict, parent_id: str | None = None, depends_on: str | None = None,
                share_key: str | None = None, status: str = "queued", executor: str = "local",
                experiment: str | None = None, sweep: str | None = None) -> str:
        check_owner(owner)
        run_id = secrets.token_hex(6)
        db.execute(
            "INSERT INTO runs (id, parent_id, depends_on, owner, kind, preset, method, config, "
            "share_key, executor, status, created, experiment, sweep) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (run_id, parent_id, depends_on, owner, kind, preset, method, json.dumps(config),
             share_key, executor, status, time.time(), experiment,
             None if sweep is None else check_sweep_id(sweep)))
        return run_id

    def get(self, run_id: str) -> Run:
        row = self.db.execute("SELECT * FROM runs WHERE id = ?",
                              (check_run_id(run_id),)).fetchone()
        if row is None:
            raise StoreError(f"no run {run_id} in {self.path}")
        return _row_to_run(row)

    def runs(self, owner: str | None = None, statuses: tuple[str, ...] | None = None,
             kind: str | None = None, executor: str | None = None,
             experiment: str | None = None, share_key: str | None = None,
             sweep: str | None = None, limit: int | None = 1000,
             oldest_first: bool = False) -> list[Run]:
        """Runs that match every filter given, newest first (`oldest_first`: FIFO order), at
        most `limit` of them (None: all); `count` says how many match in all."""
        where, args = self._where(owner=owner, statuses=statuses, kind=kind, executor=executor,
                                  experiment=experiment, share_key=share_key, sweep=sweep)
        sql = (f"SELECT * FROM runs WHERE {where} "
               f"ORDER BY created {'ASC' if oldest_first else 'DESC'}, id LIMIT ?")
        args.append(-1 if limit is None else limit)  # SQLite: a negative limit is none
        return [_row_to_run(r) for r in self.db.execute(sql, args).fetchall()]

    def count(self, **filters) -> int:
        """How many runs match `filters` (those of `runs`): what a truncated list leaves out."""
        where, args = self._where(**filters)
        return self.db.execute(f"SELECT COUNT(*) FROM runs WHERE {where}", args).fetchone()[0]

    FILTERS = ("executor", "owner", "kind", "experiment", "share_key", "sweep")

    @classmethod
    def _where(cls, statuses: tuple[str, ...] | None = None, **equal) -> tuple[str, list]:
        if unknown := set(equal) - set(cls.FILTERS):  # a typo must not count every run
            raise TypeError(f"unknown run filter {', '.join(sorted(unknown))}")
        where, args = "1=1", []
        for column in cls.FILTERS:
            if equal.get(column) is not None:
                where += f" AND {column} = ?"
                args.append(equal[column])
        if statuses:
            where += f" AND status IN ({','.join('?' * len(statuses))})"
            args.extend(statuses)
        return where, args

    def ready_heads(self, each: int, skip: Iterable[str] = ()) -> list[Run]:
        """The oldest `each` queued runs of every owner that can start now (no dependency, or
        one that is done), oldest first: what a fair pick across owners chooses from, however
        many runs one owner has queued. `skip`: runs handed to a worker but not yet claimed."""
        skip = list(skip)
        rows = self.db.execute(
            "SELECT * FROM (SELECT r.*, ROW_NUMBER() OVER (PARTITION BY r.owner "
            "ORDER BY r.created, r.id) AS place FROM runs AS r LEFT JOIN runs AS d "
            "ON d.id = r.depends_on WHERE r.status = 'queued' AND "
            f"r.id NOT IN ({','.join('?' * len(skip))}) AND "
            "(r.depends_on IS NULL OR d.status = 'done')) WHERE place <= ? "
            "ORDER BY created, id", (*skip, each)).fetchall()
        return [_row_to_run(row, extra=("place",)) for row in rows]

    def last_started(self, owners: Iterable[str]) -> dict[str, float]:
        """When each owner's most recent run started (owners none of whose runs started yet
        are left out): the scheduler serves owners round robin by it."""
        owners = list(owners)
        rows = self.db.execute(
            f"SELECT owner, MAX(started) FROM runs WHERE owner IN ({','.join('?' * len(owners))})"
            " AND started IS NOT NULL GROUP BY owner", owners).fetchall()
        return dict(rows)

    def blocked_by_failure(self) -> list[tuple[Run, Run]]:
        """(queued run, its dependency) where the dependency failed, was cancelled or was
        interrupted: runs that can never start as they are."""
        rows = self.db.execute(
            "SELECT r.id, d.id FROM runs AS r JOIN runs AS d ON d.id = r.depends_on WHERE "
            "r.status = 'queued' AND d.status IN ('failed', 'cancelled', 'interrupted')"
        ).fetchall()
        return [(self.get(run), self.get(dep)) for run, dep in rows]

    def queue_position(self, run_id: str) -> int | None:
        """1-based place among its owner's queued runs (FIFO by submission), None if not
        queued. Owners take turns for free workers, so others' runs never stand before it."""
        row = self.db.execute(
            "SELECT COUNT(*) FROM runs AS other, runs AS this WHERE this.id = ? AND "
            "this.status = 'queued' AND other.status = 'queued' AND other.owner = this.owner "
            "AND (other.created < this.created OR (other.created = this.created AND "
            "other.id <= this.id))", (check_run_id(run_id),)).fetchone()
        return row[0] or None

    @staticmethod
    def _encode(fields: dict) -> dict:
        if fields.get("result") is not None:
            fields["result"] = json.dumps(fields["result"])
        if "status" in fields and fields["status"] not in STATUSES:
            raise StoreError(f"unknown status {fields['status']!r}")
        return fields

    def update(self, run_id: str, **fields) -> None:
        fields = self._encode(fields)
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.write() as db:
            db.execute(f"UPDATE runs SET {cols} WHERE id = ?",
                       (*fields.values(), check_run_id(run_id)))

    def transition(self, run_id: str, old: tuple[str, ...], **fields) -> bool:
        """Update only if the run's status is one of `old` (so two processes cannot both
        start, or both finish, the same run). Returns whether it happened."""
        fields = self._encode(fields)
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.write() as db:
            cur = db.execute(
                f"UPDATE runs SET {cols} WHERE id = ? AND status IN "
                f"({','.join('?' * len(old))})", (*fields.values(), check_run_id(run_id), *old))
        return cur.rowcount == 1

    def cancel_sweep(self, sweep: str, owner: str | None = None) -> tuple[int, int]:
        """Cancel a sweep's queued runs and ask its running ones to stop, in one transaction
        (`owner`: only that owner's). Returns (cancelled, asked to stop)."""
        where, args = self._where(sweep=check_sweep_id(sweep), owner=owner)
        with self.write() as db:
            cancelled = db.execute(
                f"UPDATE runs SET status = 'cancelled', finished = ?, error = 'cancelled "
                f"with its sweep before it started' WHERE {where} AND status = 'queued'",
                (time.time(), *args)).rowcount
            asked = db.execute(f"UPDATE runs SET cancel_requested = 1 WHERE {where} AND "
                               "status = 'running' AND cancel_requested = 0", args).rowcount
        return cancelled, asked

    def claim(self, run_id: str, executor: str, **fields) -> bool:
        """Take a queued run to run it (`executor`: what runs it, 'local' or 'ray'); False when
        another took it first. A resumed run starts afresh: no error, no end, no cancel."""
        now = time.time()
        return self.transition(run_id, ("queued",), status="running", executor=executor,
                               started=now, heartbeat=now, error=None, finished=None,
                               cancel_requested=0, **fields)

    def request_cancel(self, run_id: str) -> Run:
        run = self.get(run_id)
        if run.status == "queued":
            self.transition(run_id, ("queued",), status="cancelled", finished=time.time(),
                            error="cancelled before it started")
        elif run.status == "running":
            self.update(run_id, cancel_requested=1)
        return self.get(run_id)

    # ------------------------------------------------------------------------ owners

    def claim_owner(self, owner: str, key: str) -> bool:
        """Whether `key` is `owner`'s key. A name nobody has claimed is claimed now, with this
        key (its hash is kept); later callers must bring the same key. Reserved names and
        malformed names or keys raise StoreError."""
        check_owner(owner)
        if is_reserved_owner(owner):
            raise OwnerRefused(f"owner {owner!r} is reserved; choose another name")
        if not is_owner_key(key):
            raise StoreError("an owner key is 22-128 URL-safe characters (new_owner_key)")
        with self.write() as db:
            row = db.execute("SELECT key_hash FROM owners WHERE name = ?", (owner,)).fetchone()
            if row is None:
                db.execute("INSERT INTO owners VALUES (?,?,?)",
                           (owner, _key_hash(key), time.time()))
                return True
        return hmac.compare_digest(row[0], _key_hash(key))

    def owner_claimed(self, owner: str) -> bool:
        return self.db.execute("SELECT 1 FROM owners WHERE name = ?",
                               (owner,)).fetchone() is not None

    def check_owner_key(self, owner: str | None, key: str | None,
                        run_id: str | None = None) -> None:
        """Raise OwnerRefused unless `key` is the key `owner` was claimed with (and, with
        `run_id`, that run is `owner`'s). A reserved owner, the instructor's view included,
        has no key: it can change nothing."""
        if not isinstance(owner, str) or not _OWNER.match(owner):
            raise OwnerRefused(f"a key without a valid owner name ({owner!r})")
        if is_reserved_owner(owner):
            raise OwnerRefused(f"{owner!r} cannot change runs (a read-only or internal owner)")
        row = self.db.execute("SELECT key_hash FROM owners WHERE name = ?",
                              (owner,)).fetchone()
        if row is None or not isinstance(key, str) or not hmac.compare_digest(
                row[0], _key_hash(key)):
            raise OwnerRefused(f"this session does not hold the key of owner {owner!r}")
        if run_id is not None and self.get(run_id).owner != owner:
            raise OwnerRefused(f"run {run_id} belongs to another owner")

    # ------------------------------------------------------------------------ challenges

    def publish_challenge(self, *, title: str, instructions: str, preset: str,
                          overrides: list[str], experiments: list[str], methods: list[str],
                          metric: str, budget: float | None = None) -> int:
        """A new open challenge (the open one, if any, is closed); returns its id. `budget`:
        minutes from now within which an entry must be made, or None."""
        title = title.strip()
        if not title:
            raise StoreError("a challenge needs a title")
        if not methods:
            raise StoreError("a challenge allows one method at least")
        if not experiments:
            raise StoreError("a challenge needs an experiment")
        if budget is not None and not budget > 0:
            raise StoreError(f"a time budget is a number of minutes above 0, not {budget!r}")
        from dimalign.room import SCORES  # every page's banner names the score by it

        if metric not in SCORES:
            raise StoreError(f"a challenge ranks by {' or '.join(SCORES)}, not {metric!r}")
        now = time.time()
        with self.write() as db:
            db.execute("UPDATE challenges SET closed = ?, changed = ? WHERE closed IS NULL",
                       (now, now))
            return db.execute(
                "INSERT INTO challenges (title, instructions, preset, overrides, experiments, "
                "methods, metric, budget, created, opened, changed) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (title, instructions, preset, json.dumps(list(overrides)),
                 json.dumps(list(experiments)), json.dumps(list(methods)), metric, budget,
                 now, now, now)).lastrowid

    def challenge(self, challenge_id: int) -> Challenge:
        row = self.db.execute("SELECT * FROM challenges WHERE id = ?",
                              (int(challenge_id),)).fetchone()
        if row is None:
            raise StoreError(f"no challenge {challenge_id} in {self.path}")
        return _row_to_challenge(row)

    def challenges(self) -> list[Challenge]:
        """Every challenge, newest first."""
        return [_row_to_challenge(row) for row in
                self.db.execute("SELECT * FROM challenges ORDER BY id DESC")]

    def current_challenge(self) -> Challenge | None:
        """The open challenge, else the newest closed one, else None."""
        row = self.db.execute("SELECT * FROM challenges ORDER BY closed IS NULL DESC, id DESC "
                              "LIMIT 1").fetchone()
        return None if row is None else _row_to_challenge(row)

    def close_challenge(self, challenge_id: int) -> bool:
        """Close a challenge; whether it was open."""
        self.challenge(challenge_id)  # StoreError when there is none
        now = time.time()
        with self.write() as db:
            return db.execute("UPDATE challenges SET closed = ?, changed = ? WHERE id = ? AND "
                              "closed IS NULL", (now, now, int(challenge_id))).rowcount == 1

    def open_challenge(self, challenge_id: int) -> bool:
        """Open a closed challenge again, while no challenge is open; whether it did (False:
        it is open, or another one is: the page that asked was out of date). Its budget keeps
        its start (`Challenge.opened`, when it was published): its entries stay ranked, and a
        run qualifies by the same rule whenever it is entered. One whose budget has run out
        is refused (StoreError: publish it anew for another round). Its revealed settings are
        hidden until revealed again."""
        challenge = self.challenge(challenge_id)  # StoreError when there is none
        now = time.time()
        if challenge.closed is not None and challenge.deadline is not None \
                and challenge.deadline <= now:
            raise StoreError(f"the challenge's {challenge.budget:g}-minute budget has run out: "
                             "publish it again for another round")
        with self.write() as db:
            return db.execute(
                "UPDATE challenges SET closed = NULL, revealed_run = NULL, changed = ? "
                "WHERE id = ? AND closed IS NOT NULL AND NOT EXISTS "
                "(SELECT 1 FROM challenges WHERE closed IS NULL)",
                (now, int(challenge_id))).rowcount == 1

    def reveal_challenge(self, challenge_id: int, run_id: str) -> None:
        """Show everyone the settings of `run_id`, an entry of this closed challenge (the
        page picks the best)."""
        check_run_id(run_id)
        with self.write() as db:
            row = db.execute("SELECT closed FROM challenges WHERE id = ?",
                             (int(challenge_id),)).fetchone()
            if row is None:
                raise StoreError(f"no challenge {challenge_id} in {self.path}")
            if row[0] is None:
                raise StoreError("close the challenge before revealing its best settings")
            if db.execute("SELECT 1 FROM submissions WHERE challenge_id = ? AND run_id = ?",
                          (int(challenge_id), run_id)).fetchone() is None:
                raise StoreError(f"run {run_id} is not an entry of this challenge")
            db.execute("UPDATE challenges SET revealed_run = ?, changed = ? WHERE id = ?",
                       (run_id, time.time(), int(challenge_id)))

    def submit_to_challenge(self, challenge_id: int, run_id: str, owner: str,
                            key: str | None = None) -> None:
        """Enter `owner`'s finished run in a challenge. `key`: the web app's proof that the
        caller is `owner` (None: the machine's own user). Refused with a StoreError of one
        line (`entry_refusal`, or an entry made already); nothing is written then."""
        check_run_id(run_id)
        check_owner(owner)
        if key is not None:
            self.check_owner_key(owner, key, run_id)
        with self.write() as db:
            row = db.execute("SELECT * FROM challenges WHERE id = ?",
                             (int(challenge_id),)).fetchone()
            if row is None:
                raise StoreError(f"no challenge {challenge_id} in {self.path}")
            run = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if run is None:
                raise StoreError(f"no run {run_id} in {self.path}")
            challenge = _row_to_challenge(row)
            why = entry_refusal(challenge, _row_to_run(run), owner)
            if why is not None:
                raise StoreError(why)
            if db.execute("SELECT 1 FROM submissions WHERE challenge_id = ? AND run_id = ?",
                          (challenge.id, run_id)).fetchone() is not None:
                raise StoreError(f"run {run_id} is entered in {challenge.title!r} already")
            db.execute("INSERT INTO submissions VALUES (?,?,?,?)",
                       (challenge.id, run_id, owner, time.time()))

    def submissions(self, challenge_id: int, owner: str | None = None) -> list[Run]:
        """The runs entered in a challenge (`owner`: that owner's), the newest entry first."""
        where, args = "s.challenge_id = ?", [int(challenge_id)]
        if owner is not None:
            where, args = where + " AND s.owner = ?", [*args, owner]
        return [_row_to_run(row) for row in self.db.execute(
            "SELECT r.* FROM submissions AS s JOIN runs AS r ON r.id = s.run_id "
            f"WHERE {where} ORDER BY s.created DESC, s.rowid DESC", args)]

    def challenge_version(self) -> tuple:
        """(challenges, their last change, entries): the first two move when a challenge is
        published, opened, closed or revealed, the last with every entry (one statement over the
        two challenge tables, which a workshop keeps small)."""
        return tuple(self.db.execute(
            "SELECT (SELECT COUNT(*) FROM challenges), (SELECT MAX(changed) FROM challenges), "
            "(SELECT COUNT(*) FROM submissions)").fetchone())

    # ------------------------------------------------------------------------ metrics

    def log_metrics(self, run_id: str, step: int, values: dict[str, float]) -> None:
        """One step's metrics in one transaction."""
        now = time.time()
        rows = [(run_id, step, k, None if v is None else float(v), now)
                for k, v in values.items()]
        with self.write() as db:
            db.executemany("INSERT INTO metrics VALUES (?,?,?,?,?)", rows)

    def curve(self, run_id: str, key: str) -> list[tuple[int, float]]:
        cur = self.db.execute("SELECT step, value FROM metrics WHERE run_id = ? AND key = ? "
                              "ORDER BY step", (run_id, key))
        return cur.fetchall()

    def curves(self, run_id: str) -> dict[str, list[tuple[int, float]]]:
        out: dict[str, list[tuple[int, float]]] = {}
        for key, step, value in self.db.execute(
                "SELECT key, step, value FROM metrics WHERE run_id = ? ORDER BY step", (run_id,)):
            out.setdefault(key, []).append((step, value))
        return out

    def metric_rows(self, run_id: str) -> list[tuple[int, str, float | None, float]]:
        """Every metric the run wrote: (step, key, value, wall time), by step then key."""
        return [tuple(row) for row in self.db.execute(
            "SELECT step, key, value, wall FROM metrics WHERE run_id = ? ORDER BY step, key",
            (run_id,))]

    def version(self, run_id: str) -> tuple:
        """Changes whenever the run's row or its metrics do: a live page compares it with the
        one it last drew and skips the work while nothing moved (one indexed query)."""
        return self.db.execute(
            "SELECT status, progress, phase, error, (SELECT MAX(rowid) FROM metrics WHERE "
            "run_id = ?) FROM runs WHERE id = ?", (run_id, check_run_id(run_id))).fetchone()

    def room_version(self, experiments: Iterable[str], kind: str = "unlearn") -> tuple:
        """Changes whenever a run of `kind` in these experiments is created, starts, ends or
        changes status (not with its progress), and with every change of the challenges and
        their entries (`challenge_version`): the instructor's room view rereads its runs only
        then (one indexed query)."""
        keys = list(experiments)
        return tuple(self.db.execute(
            "SELECT COUNT(*), MAX(created), MAX(started), MAX(finished), "
            "SUM(status = 'queued'), SUM(status = 'running'), SUM(status = 'done'), "
            "(SELECT COUNT(*) FROM challenges), (SELECT MAX(changed) FROM challenges), "
            "(SELECT COUNT(*) FROM submissions) FROM runs "
            f"WHERE kind = ? AND experiment IN ({','.join('?' * len(keys))})",
            (kind, *keys)).fetchone())

    def last_step(self, run_id: str) -> int:
        row = self.db.execute("SELECT MAX(step) FROM metrics WHERE run_id = ?",
                              (run_id,)).fetchone()
        return -1 if row[0] is None else int(row[0])

    # ------------------------------------------------------------------------ artifacts

    def add_artifact(self, run_id: str, name: str, path: Path) -> None:
        """Index a run's file, by its path relative to the home (so a copied home's index
        points into the copy)."""
        with self.write() as db:
            db.execute("INSERT OR REPLACE INTO artifacts VALUES (?,?,?,?)",
                       (run_id, name, paths.relative_to_home(path), time.time()))

    def artifacts(self, run_id: str) -> dict[str, Path]:
        """A run's indexed files, as absolute paths in this home (`paths.resolve_in_home`:
        older, absolute entries of another home map by their run folder's name)."""
        return {name: paths.resolve_in_home(p) for name, p in self.db.execute(
            "SELECT name, path FROM artifacts WHERE run_id = ?", (run_id,))}


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True
