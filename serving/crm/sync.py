"""What every live sync needs, in one place: HubSpot, Salesforce and the webhook only say how
their requests and responses look (a `Connector`); this module sends them.

- **Retries** (tenacity, not a hand-rolled loop): 429, 5xx, connection errors and timeouts are
  retried with exponential backoff and full jitter, at most `attempts` times per request and
  never past the run's total `deadline`. A server's own hint (HubSpot's rate-limit interval
  headers, `Retry-After`) replaces the exponential wait when it has one.
- **Rate limit**: a client-side sliding window (`rate=N/Ts`, e.g. `100/10s`) that also tightens
  itself to what the server advertises (`X-HubSpot-RateLimit-Max` per
  `-Interval-Milliseconds`), so a well-behaved run rarely sees a 429 at all.
- **Partial failures**: a connector turns a response into one outcome per record (landed, or
  the CRM's message); the rest of the batch is committed, the failed records are reported.
- **Checkpoint**: a small SQLite file (`crm_sync.sqlite` in the state folder, default the
  models folder beside `crm.db`) records every record that landed, per target and run id, and
  the last failure of those that did not. A rerun with the same run id (`expansion score
  --run-id`) sends only what has not landed; a crash mid-sync resumes the same way. The
  checkpoint is written after each response, so at most the one batch in flight at a crash
  is sent again, and the CRM calls are upserts: sending it twice writes the same values.
- **Dry run**: the same code path writes each request (method, URL, body) to a folder
  instead of sending it.
- **Overlap**: batches are sent by one sender thread (one request at a time) while the batch
  job explains the next chunk; an error that stops the sync (`SyncError`) surfaces in the
  batch job at its next write or at the commit.

Tokens live only in the HTTP client's headers: they are never put in a message, a log
record, the report or the dry-run files.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs

import httpx
import pandas as pd

from serving.sinks import (
    RunInfo,
    create_database_engine,
    create_tables,
    runs_table,
    to_records,
    upsert,
)

log = logging.getLogger(__name__)

# --- options --------------------------------------------------------------------------------

COMMON_OPTIONS = {
    "rate",
    "timeout",
    "deadline",
    "attempts",
    "backoff",
    "backoff_max",
    "batch_size",
    "state_dir",
    "runs_db",
    "dry_run",
}


@dataclass(frozen=True)
class Rate:
    """At most `requests` requests in any window of `seconds`."""

    requests: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    @classmethod
    def parse(cls, value: str) -> Rate:
        """`10/s`, `10/1s`, `100/10s`, `190/10000ms`."""
        try:
            count, _, window = value.partition("/")
            window = window.strip() or "1s"
            if window.endswith("ms"):
                seconds = float(window[:-2] or 1) / 1000
            else:
                seconds = float(window.removesuffix("s") or 1)
            rate = cls(int(count), seconds)
        except ValueError as exc:
            raise ValueError(f"rate {value!r}: write REQUESTS/SECONDSs, e.g. 100/10s") from exc
        if rate.requests < 1 or rate.seconds <= 0:
            raise ValueError(f"rate {value!r}: requests and window must be positive")
        return rate


@dataclass(frozen=True)
class SyncOptions:
    """How a live sync behaves; every field can be set in the target's query string."""

    batch_size: int
    rate: Rate | None = None
    rate_explicit: bool = False  # set by the user (else a default the server may replace)
    timeout: float = 30.0  # seconds per request
    deadline: float = 4 * 3600.0  # seconds for the whole sync, retries included
    attempts: int = 8  # per request
    backoff: float = 1.0  # first exponential wait, seconds
    backoff_max: float = 60.0
    state_dir: Path = Path("models")
    runs_db: str | None = None  # scoring_runs of this database get the run record
    dry_run: Path | None = None

    @classmethod
    def from_query(
        cls, options: dict[str, str], *, max_batch: int, default_rate: Rate | None
    ) -> SyncOptions:
        """Options of a target (`?rate=10/s&deadline=600`) over the defaults."""
        from serving.settings import get_settings

        models_dir = get_settings().models_dir
        batch = int(options.get("batch_size", max_batch))
        if not 1 <= batch <= max_batch:
            raise ValueError(f"batch_size must be 1..{max_batch} (the documented maximum)")
        runs_db = options.get("runs_db", f"sqlite:///{models_dir / 'crm.db'}")
        dry = options.get("dry_run")
        return cls(
            batch_size=batch,
            rate=Rate.parse(options["rate"]) if "rate" in options else default_rate,
            rate_explicit="rate" in options,
            timeout=float(options.get("timeout", cls.timeout)),
            deadline=float(options.get("deadline", cls.deadline)),
            attempts=int(options.get("attempts", cls.attempts)),
            backoff=float(options.get("backoff", cls.backoff)),
            backoff_max=float(options.get("backoff_max", cls.backoff_max)),
            state_dir=Path(options.get("state_dir", models_dir)),
            runs_db=None if runs_db in ("", "none") else runs_db,
            dry_run=Path(dry) if dry else None,
        )


def split_target(target: str, prefix: str, allowed: set[str]) -> tuple[str, dict[str, str]]:
    """`prefix` + rest, `?` + options: (rest, options); unknown options are an error."""
    rest, _, query = target.removeprefix(prefix).partition("?")
    options = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    unknown = set(options) - allowed - COMMON_OPTIONS
    if unknown:
        raise ValueError(
            f"{target!r}: unknown option(s) {sorted(unknown)}; "
            f"allowed {sorted(allowed | COMMON_OPTIONS)}"
        )
    return rest, options


# --- errors ---------------------------------------------------------------------------------


class SyncError(RuntimeError):
    """The sync cannot go on (bad credentials, limit used up): what landed stays landed."""


class Retryable(Exception):
    """A response worth another try; `wait` is the server's hint in seconds, if any."""

    def __init__(self, message: str, wait: float | None = None, grow: bool = False) -> None:
        super().__init__(message)
        self.wait, self.grow = wait, grow


class TokenExpired(Exception):
    """401 for an expired session: refresh the token once, then try again."""


# --- rate limiter ---------------------------------------------------------------------------


class RateLimiter:
    """A sliding window: at most `rate.requests` starts in any `rate.seconds`.

    `advertise` takes the server's own limit (e.g. HubSpot's headers): it replaces a default,
    and an explicit setting (`rate=`) gives way only to a tighter one. `pause` holds every
    request back until a time the server asked for.
    """

    def __init__(self, rate: Rate | None, explicit: bool = False) -> None:
        self.rate, self.explicit = rate, explicit
        # added to the window: the server counts arrivals, we count starts, and the time
        # between varies; each 429 for the rate widens it a little (at most 5% of the window),
        # each full window without one narrows it again
        self.margin = 0.01
        self._calm = 0
        self._starts: deque[float] = deque()
        self._not_before = 0.0
        self._lock = threading.Lock()

    def advertise(self, rate: Rate) -> None:
        with self._lock:
            if not self.explicit or self.rate is None or rate.per_second < self.rate.per_second:
                self.rate = rate

    def overshot(self) -> None:
        """The server said the window was full although ours was not: keep more distance."""
        with self._lock:
            if self.rate is not None:
                self.margin = min(self.margin + 0.005, 0.05 * self.rate.seconds)
                self._calm = 0

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._not_before = max(self._not_before, time.monotonic() + seconds)

    def acquire(self) -> None:
        """Block until a request may start, and count it."""
        with self._lock:
            while True:
                now = time.monotonic()
                if now < self._not_before:
                    time.sleep(self._not_before - now)
                    continue
                if self.rate is None:
                    return
                while self._starts and self._starts[0] <= now - self.rate.seconds:
                    self._starts.popleft()
                if len(self._starts) < self.rate.requests:
                    self._starts.append(now)
                    self._calm += 1
                    if self._calm >= self.rate.requests and self.margin > 0.01:
                        self.margin, self._calm = max(0.01, self.margin - 0.005), 0
                    return
                time.sleep(self._starts[0] + self.rate.seconds - now + self.margin)


# --- checkpoint -----------------------------------------------------------------------------


class Checkpoint:
    """Which records of a run landed at a target (SQLite, one commit per batch)."""

    def __init__(self, path: Path, target: str, run_id: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.target, self.run_id = path, target, run_id
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        with self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS landed (target TEXT, run_id TEXT, account_id TEXT,"
                " at TEXT, PRIMARY KEY (target, run_id, account_id))"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS failed (target TEXT, run_id TEXT, account_id TEXT,"
                " message TEXT, at TEXT, PRIMARY KEY (target, run_id, account_id))"
            )

    def landed(self) -> set[str]:
        rows = self._db.execute(
            "SELECT account_id FROM landed WHERE target = ? AND run_id = ?",
            (self.target, self.run_id),
        )
        return {r[0] for r in rows}

    def record(self, landed: Iterable[str], failed: dict[str, str]) -> None:
        at = datetime.now(UTC).isoformat()
        key = (self.target, self.run_id)
        with self._db:  # one transaction: a batch is checkpointed whole or not at all
            self._db.executemany(
                "INSERT OR IGNORE INTO landed VALUES (?, ?, ?, ?)",
                [(*key, a, at) for a in landed],
            )
            self._db.executemany(
                "DELETE FROM failed WHERE target = ? AND run_id = ? AND account_id = ?",
                [(*key, a) for a in landed],
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO failed VALUES (?, ?, ?, ?, ?)",
                [(*key, a, m, at) for a, m in failed.items()],
            )

    def failures(self) -> dict[str, str]:
        rows = self._db.execute(
            "SELECT account_id, message FROM failed WHERE target = ? AND run_id = ?"
            " ORDER BY account_id",
            (self.target, self.run_id),
        )
        return dict(rows.fetchall())

    def close(self) -> None:
        self._db.close()


# --- connectors -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One HTTP call, as sent or as written by a dry run."""

    method: str
    url: str
    json: Any = None
    data: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)


class Connector(Protocol):
    """What a CRM (or webhook) contributes: bodies, and what its responses mean."""

    system: str
    destination: str  # identifies the target in the checkpoint (no secrets)
    default_rate: Rate | None

    def check_credentials(self) -> None:
        """Raise ValueError naming the missing environment variable(s)."""

    def client_headers(self) -> dict[str, str]:
        """Headers of every request (the token goes here and nowhere else)."""

    def setup(self, engine: SyncEngine) -> None:
        """Once per run before the records: e.g. create missing properties."""

    def item(self, record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """(account id, the record as this CRM takes it)."""

    def batch_request(self, items: list[dict[str, Any]], batch_id: str) -> Request: ...

    def check(self, response: httpx.Response, limiter: RateLimiter) -> None:
        """Raise Retryable / TokenExpired / SyncError for responses that are not an answer."""

    def outcome(self, keys: list[str], response: httpx.Response) -> dict[str, str | None]:
        """Per record: None if it landed, else the CRM's message."""

    def refresh_token(self, engine: SyncEngine) -> bool:
        """Get a new token after a 401; False if this connector cannot."""


# --- the engine -----------------------------------------------------------------------------


@dataclass
class SyncReport:
    """What a sync did; goes into the run record (`scoring_runs.crm_sync`) and the summary."""

    target: str
    run_id: str
    dry_run: bool = False
    sent: int = 0  # records sent in this attempt (each once, retries not counted)
    landed: int = 0  # records of the run landed in total, earlier attempts included
    already_landed: int = 0  # skipped: landed by an earlier attempt of the same run id
    requests: int = 0
    retries: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def status(self) -> str:
        return "partial" if self.failures or self.notes else "completed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "status": "dry_run" if self.dry_run else self.status,
            "sent": self.sent,
            "landed": self.landed,
            "already_landed": self.already_landed,
            "failed": len(self.failures),
            "requests": self.requests,
            "retries": self.retries,
            "seconds": round(self.seconds, 3),
            "failures": [{"account_id": a, "message": m} for a, m in self.failures.items()],
            "notes": self.notes,
        }


class _ServerWait:
    """tenacity wait: the server's hint when it gave one, else exponential with jitter."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial, self.maximum = initial, maximum

    def __call__(self, state) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hint = getattr(exc, "wait", None)
        if hint is not None and getattr(exc, "grow", False):  # a unit of wait, not an order
            # 0, 1, 3, 7... units: the first retry is already spaced by the rate limiter
            hint = min(self.maximum, hint * (2 ** (state.attempt_number - 1) - 1))
        if hint is not None:
            # a little jitter so that parallel clients do not come back in step
            return hint + random.uniform(0, 0.1 * max(hint, 0.01))
        # "full jitter": uniform in [0, initial * 2^(n-1)], capped
        return random.uniform(0, min(self.maximum, self.initial * 2 ** (state.attempt_number - 1)))


class SyncEngine:
    """Batches, sends (or writes, in a dry run), retries, checkpoints and reports."""

    def __init__(self, connector: Connector, options: SyncOptions, run_id: str) -> None:
        self.connector, self.options, self.run_id = connector, options, run_id
        self.report = SyncReport(connector.destination, run_id, dry_run=options.dry_run is not None)
        self.limiter = RateLimiter(options.rate, options.rate_explicit)
        self._started = time.monotonic()
        self._deadline = self._started + options.deadline
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self._seen: set[str] = set()
        self._batches = 0
        self._client: httpx.Client | None = None
        self._checkpoint: Checkpoint | None = None
        self._landed: set[str] = set()
        self._dry_files: list[str] = []
        # Batches go to one sender thread, so the batch job explains the next chunk while
        # this one is sent; the queue is short, so memory stays a few batches.
        self._queue: queue.Queue[list | None] = queue.Queue(maxsize=4)
        self._sender: threading.Thread | None = None
        self._error: BaseException | None = None
        self._stop_reason: str | None = None
        self._lock = threading.Lock()
        if options.dry_run is None:
            self._checkpoint = Checkpoint(
                options.state_dir / "crm_sync.sqlite", connector.destination, run_id
            )
            self._landed = self._checkpoint.landed()
            self._client = httpx.Client(headers=connector.client_headers())
        else:
            (options.dry_run / "requests").mkdir(parents=True, exist_ok=True)

    # -- records --
    def add(self, records: Iterable[dict[str, Any]]) -> None:
        for record in records:
            key, item = self.connector.item(record)
            if key in self._seen:  # a second row for an account: never two in one batch
                self.report.notes.append(f"duplicate account id {key!r}: only its first row sent")
                continue
            self._seen.add(key)
            if key in self._landed:
                self.report.already_landed += 1
                continue
            self._pending.append((key, item))
            if len(self._pending) >= self.options.batch_size:
                self._flush()

    def finish(self) -> SyncReport:
        """Send what is left and close; the report covers the whole run id.

        A `SyncError` of the sender (bad token, limit used up) is raised here, after the
        report and checkpoint are complete.
        """
        try:
            self._flush()
            self._join()
        finally:
            self.close()
        if self._error is not None:
            raise self._error
        return self.report

    def _join(self) -> None:
        if self._sender is not None:
            self._queue.put(None)
            self._sender.join()
            self._sender = None

    def close(self, reason: str | None = None) -> SyncReport:
        """Stop (also after a crash): unsent records are reported, the checkpoint kept.

        The batch in flight is finished (within its timeout); the queued ones are not sent.
        """
        if self._sender is not None:
            self._stop_reason = reason or "the sync was stopped"
            self._join()
        if reason and self._pending:
            for key, _ in self._pending:
                self.report.failures.setdefault(key, f"not sent: {reason}")
            self._pending = []
        if self._checkpoint is not None:
            stored = self._checkpoint.failures()
            self.report.failures = {**stored, **self.report.failures}
            self.report.landed = len(self._checkpoint.landed())
            for key in self._checkpoint.landed():  # landed earlier in this very run
                self.report.failures.pop(key, None)
            self._checkpoint.close()
            self._checkpoint = None
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.options.dry_run is not None:
            manifest = {
                "system": self.connector.system,
                "destination": self.connector.destination,
                "run_id": self.run_id,
                "setup": [f for f in self._dry_files if not f.startswith("requests/")],
                "requests": [f for f in self._dry_files if f.startswith("requests/")],
                "records": self.report.sent,
            }
            (self.options.dry_run / "manifest.json").write_text(json.dumps(manifest, indent=1))
        self.report.seconds = time.monotonic() - self._started
        return self.report

    def _flush(self) -> None:
        if self._error is not None:  # the sender stopped: the run stops too
            raise self._error
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        self._batches += 1
        if self.options.dry_run is not None:
            request = self.connector.batch_request([i for _, i in batch], self._batch_id())
            self.report.sent += len(batch)
            self.write_dry(request, f"requests/{self._batches:06d}.json")
            return
        if self._sender is None:
            self._sender = threading.Thread(target=self._send_all, name="crm-sync", daemon=True)
            self._sender.start()
        self._queue.put((self._batch_id(), batch))

    def _batch_id(self) -> str:
        return f"{self.run_id}-{self._batches:06d}"

    def _send_all(self) -> None:
        """The sender thread: one batch at a time, until None."""
        while (job := self._queue.get()) is not None:
            batch_id, batch = job
            if self._error is not None or self._stop_reason is not None:
                reason = self._stop_reason or str(self._error)
                self._failed({k: f"not sent: {reason}" for k, _ in batch})
                continue
            try:
                self._send(batch_id, batch)
            except BaseException as exc:  # SyncError: stop, and tell the main thread
                self._error = exc
                self._failed({k: f"not sent: {exc}" for k, _ in batch})

    def _failed(self, failures: dict[str, str]) -> None:
        with self._lock:
            for key, message in failures.items():
                self.report.failures.setdefault(key, message)

    def _send(self, batch_id: str, batch: list[tuple[str, dict[str, Any]]]) -> None:
        keys = [k for k, _ in batch]
        request = self.connector.batch_request([i for _, i in batch], batch_id)
        self.report.sent += len(batch)
        try:
            response = self.call(request)
            outcome = self.connector.outcome(keys, response)
        except (Retryable, httpx.TransportError) as exc:  # retries used up or deadline
            outcome = dict.fromkeys(keys, f"not sent: {_describe(exc)}")
        landed = [k for k, msg in outcome.items() if msg is None]
        failed = {k: msg for k, msg in outcome.items() if msg is not None}
        self._checkpoint.record(landed, failed)
        with self._lock:
            self.report.failures.update(failed)
            for key in landed:
                self.report.failures.pop(key, None)
        if failed:
            log.warning(
                "%s: %d of %d records failed", self.connector.system, len(failed), len(keys)
            )

    # -- requests --
    def write_dry(self, request: Request, name: str) -> None:
        path = self.options.dry_run / name
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"method": request.method, "url": request.url, "body": request.json}
        if request.data is not None:  # form posts (token requests) carry secrets: names only
            body["body"] = {k: "<redacted>" for k in request.data}
        path.write_text(json.dumps(body, indent=1))
        self._dry_files.append(name)

    def call(self, request: Request) -> httpx.Response:
        """One request with the retry policy; a non-retryable answer is returned as is."""
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

        refreshed = False

        def past_deadline(state) -> bool:  # or stopped: a crash does not wait for retries
            stopped = self._stop_reason is not None
            return stopped or time.monotonic() + state.upcoming_sleep >= self._deadline

        retrying = Retrying(
            stop=stop_after_attempt(self.options.attempts) | past_deadline,
            wait=_ServerWait(self.options.backoff, self.options.backoff_max),
            retry=retry_if_exception_type((Retryable, httpx.TransportError)),
            before_sleep=self._note_retry,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                try:
                    return self._once(request)
                except TokenExpired as exc:
                    if refreshed or not self.connector.refresh_token(self):
                        raise SyncError(
                            f"{self.connector.system}: the access token was rejected ({exc})"
                        ) from None
                    refreshed = True
                    raise Retryable("token refreshed", wait=0.0) from None
        raise AssertionError("unreachable")  # Retrying either returns or raises

    def _once(self, request: Request) -> httpx.Response:
        # the request is built (JSON encoded, signed) before the limiter lets it go, so the
        # time between our count and the server's is only the network's
        if hasattr(request, "signed"):  # webhooks: signed afresh at every attempt
            content, headers = request.signed()
            built = self._client.build_request(
                request.method, request.url, content=content, headers=headers
            )
        else:
            built = self._client.build_request(
                request.method,
                request.url,
                json=request.json,
                data=request.data,
                headers=request.headers or None,
            )
        self.limiter.acquire()
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise httpx.TimeoutException("the sync deadline has passed")
        timeout = min(self.options.timeout, max(remaining, 0.001))
        built.extensions["timeout"] = httpx.Timeout(timeout).as_dict()
        self.report.requests += 1
        response = self._client.send(built)
        self.connector.check(response, self.limiter)
        return response

    def _note_retry(self, state) -> None:
        self.report.retries += 1
        exc = state.outcome.exception()
        log.info(
            "%s: retry %d in %.2f s after %s",
            self.connector.system,
            state.attempt_number,
            state.upcoming_sleep,
            _describe(exc),
        )

    def set_header(self, name: str, value: str) -> None:
        """Replace a header of every later request (a refreshed token)."""
        if self._client is not None:
            self._client.headers[name] = value


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"timeout ({exc})" if str(exc) else "timeout"
    if isinstance(exc, httpx.TransportError):
        return f"connection error ({type(exc).__name__})"
    return str(exc)


def retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds (delta form only; dates are rare for APIs)."""
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def message_of(response: httpx.Response, limit: int = 500) -> str:
    """A response's body as a short message (the CRM's words, never our request)."""
    text_ = response.text.strip()
    return (
        f"HTTP {response.status_code}: {text_[:limit]}" if text_ else f"HTTP {response.status_code}"
    )


# --- the sink -------------------------------------------------------------------------------


class LiveSink:
    """A batch-job sink that syncs each chunk as it is written (see `serving.sinks.Sink`).

    Unlike the database and file sinks a live sync cannot be all-or-nothing: what landed
    stays landed. The run record says what did not (`crm_sync` in `scoring_runs` of
    `runs_db`, default `models/crm.db`), and the same run id resumes.
    """

    def __init__(self, connector: Connector, options: SyncOptions) -> None:
        self.connector, self.options = connector, options
        mode = " (dry run)" if options.dry_run is not None else ""
        self.description = f"{connector.destination}{mode}"
        self.report: SyncReport | None = None
        self._engine: SyncEngine | None = None

    def prepare(self) -> None:
        if self.options.dry_run is None:
            self.connector.check_credentials()

    def open(self, run: RunInfo) -> None:
        self.report = None
        self._engine = SyncEngine(self.connector, self.options, run.run_id)
        try:
            self.connector.setup(self._engine)
        except BaseException:
            self._engine.close()
            raise

    def write(self, rows: pd.DataFrame) -> None:
        self._engine.add(to_records(rows))

    def commit(self, record: dict[str, Any]) -> None:
        self.report = self._engine.finish()
        status = self.report.status if self.report.status == "partial" else record["status"]
        self._store({**record, "status": status})

    def abort(self, record: dict[str, Any]) -> None:
        if self._engine is None:
            return
        self.report = self._engine.close(reason=record.get("error") or "the run failed")
        self._store(record)

    def _store(self, record: dict[str, Any]) -> None:
        if self.options.dry_run is not None:
            return
        record = {**record, "crm_sync": self.report.to_dict()}
        log.info(
            "%s: %d landed, %d failed",
            self.description,
            self.report.landed,
            len(self.report.failures),
        )
        if self.options.runs_db:
            try:
                store_run(self.options.runs_db, record)
            except Exception as exc:  # the sync itself happened: do not hide it behind this
                log.warning(
                    "could not record run %s in %s: %s", record["run_id"], self.options.runs_db, exc
                )


def store_run(url: str, record: dict[str, Any]) -> None:
    """Upsert the run's row in `scoring_runs` (a rerun of the run id replaces it)."""
    engine = create_database_engine(url)
    try:
        create_tables(engine)  # also adds the run columns an older database lacks
        names = {c.name for c in runs_table.columns}
        row = {k: v for k, v in record.items() if k in names}
        with engine.begin() as conn:
            upsert(conn, runs_table, [row], ["run_id"])
    finally:
        engine.dispose()
