"""What the contract suite cannot see of ``LibSQLStore``: its URLs, its requests, its auth
errors, what a lost connection or a killed server leaves behind, and its schema migration.

Everything that talks to a server talks to a real sqld (``tests/backends/libsql.py``), over
real HTTP: the session's sqld (tables dropped per test), a second one with JWT authentication
(tokens minted here, EdDSA with ``cryptography``), and, for the kill test, one of its own.
Requests are seen through the store's own seam, its ``HttpTransport``; a lost connection is a
real TCP proxy that cuts it. The test against Turso itself runs only when
``TURSO_DATABASE_URL`` and ``TURSO_AUTH_TOKEN`` are set.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from heron.stores import (
    Acquired,
    Checkpoint,
    Run,
    RunQuery,
    SchemaMissing,
    Signal,
    StoreError,
    open_store,
)
from heron.stores._hrana import HranaClient, mask_token
from heron.stores._http import HttpxTransport
from heron.stores._sql import SCHEMA_VERSION
from heron.stores.libsql import LibSQLAuthError, LibSQLStore
from tests.backends.libsql import Sqld, drop_heron_tables
from tests.contract.test_sqlite import V1_DDL, V1_RUN

T0 = 1_700_000_000.0


def make_run(run_id: str = "run-1", **fields: Any) -> Run:
    fields.setdefault("workflow", "order")
    fields.setdefault("created_at", T0)
    fields.setdefault("updated_at", T0)
    return Run(id=run_id, **fields)


def step(seq: int, **fields: Any) -> Checkpoint:
    fields.setdefault("kind", "step")
    fields.setdefault("name", "step")
    fields.setdefault("at", T0 + seq)
    return Checkpoint(seq=seq, **fields)


class Recorder:
    """An ``HttpTransport`` that records every request body it carries (the store's seam)."""

    def __init__(self) -> None:
        self.inner = HttpxTransport()
        self.requests: list[dict[str, Any]] = []

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        self.requests.append(json.loads(body))
        return await self.inner.post(url, headers, body)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def take(self) -> list[dict[str, Any]]:
        taken, self.requests = self.requests, []
        return taken


@pytest.fixture
async def fresh(sqld: Sqld) -> str:
    """The session's sqld with no Heron tables: its URL."""
    await drop_heron_tables(sqld.url)
    return sqld.url


@pytest.fixture
async def recorded(fresh: str) -> AsyncIterator[tuple[LibSQLStore, Recorder]]:
    recorder = Recorder()
    store = LibSQLStore(fresh, transport=recorder)
    try:
        yield store, recorder
    finally:
        await store.close()
        await recorder.aclose()


# -- URLs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("libsql://db-org.turso.io", "https://db-org.turso.io"),
        ("libsql://db-org.turso.io/", "https://db-org.turso.io"),
        ("libsql://127.0.0.1:8080?tls=0", "http://127.0.0.1:8080"),
        ("libsql://127.0.0.1:8080?tls=false", "http://127.0.0.1:8080"),
        ("https://db.example.com:8443/base/", "https://db.example.com:8443/base"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("HTTP://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ],
)
def test_network_urls(url: str, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TURSO_AUTH_TOKEN", raising=False)
    store = LibSQLStore.from_url(url)
    assert store.url == expected and store.path is None


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("file:relative/heron.db", "relative/heron.db"),
        ("file:/abs/heron.db", "/abs/heron.db"),
        ("file:///abs/heron.db", "/abs/heron.db"),
        ("file://localhost/abs/heron.db", "/abs/heron.db"),
        ("file:/abs/with%20space.db", "/abs/with space.db"),
        ("file::memory:", ":memory:"),
    ],
)
def test_file_urls(url: str, path: str) -> None:
    assert LibSQLStore.from_url(url).path == path


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("libsql://", "names no host"),
        ("libsql://h?colour=blue", "unknown libSQL URL option 'colour'"),
        ("https://h?tls=0", "tls= applies to libsql:// URLs only"),
        ("libsql://h?tls=maybe", "not a boolean"),
        ("libsql://h?timeout=soon", "not a number"),
        ("file://elsewhere/x.db", "names a host"),
        ("file:", "names no database file"),
        ("ftp://h", "not a libSQL URL"),
    ],
)
def test_bad_urls_raise_value_error(url: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        LibSQLStore.from_url(url)


def test_the_token_comes_from_the_keyword_then_the_url_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TURSO_AUTH_TOKEN", "from-env")
    assert LibSQLStore.from_url("libsql://h")._token == "from-env"
    assert LibSQLStore.from_url("libsql://h?authToken=from-url")._token == "from-url"
    assert LibSQLStore.from_url("libsql://h?authToken=u", auth_token="kw")._token == "kw"
    assert LibSQLStore.from_url("file:/x.db")._token is None  # a file takes no token
    monkeypatch.delenv("TURSO_AUTH_TOKEN")
    assert LibSQLStore.from_url("libsql://h")._token is None


def test_open_store_takes_every_libsql_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TURSO_AUTH_TOKEN", raising=False)
    for url in ("libsql://h", "libsql://h?tls=0", "https://h", "http://h:1", "file:x.db"):
        assert type(open_store(url)) is LibSQLStore, url


def test_the_token_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "eyJhbGciOiJFZERTQSJ9.c2VjcmV0.c2lnbmF0dXJl"
    store = LibSQLStore.from_url(f"libsql://db.turso.io?authToken={secret}")
    assert secret not in repr(store) and secret not in store.url
    assert mask_token(secret) in repr(store)
    with pytest.raises(ValueError) as bad:
        LibSQLStore.from_url(f"libsql://db.turso.io?authToken={secret}&oops=1")
    assert secret not in str(bad.value)


async def test_nothing_is_made_before_first_use() -> None:
    # given a store built outside any event loop's work (at import time, in a Lambda)
    store = LibSQLStore("http://127.0.0.1:9")

    # then no client, no transport, no connection exists yet
    assert store._client is None
    await store.close()


# -- requests: one per operation ---------------------------------------------------------------


def kinds(request: dict[str, Any]) -> list[str]:
    """What one pipeline request does: its statements, BEGIN/COMMIT included."""
    out: list[str] = []
    for item in request["requests"]:
        if item["type"] == "execute":
            out.append(item["stmt"]["sql"].split()[0])
        elif item["type"] == "batch":
            out.extend(s["stmt"]["sql"].split()[0] for s in item["batch"]["steps"])
        else:
            out.append(item["type"])
    return out


async def test_every_operation_is_one_request(
    recorded: tuple[LibSQLStore, Recorder],
) -> None:
    store, recorder = recorded

    # the first call checks the schema and creates it: two requests more, once per instance
    await store.create(make_run(status="running", tags=["a"]))
    assert [kinds(r)[:2] for r in recorder.take()] == [
        ["SELECT", "SELECT"],  # the check: tables and version, one request
        ["BEGIN", "CREATE"],  # the schema, in one transaction
        ["BEGIN", "INSERT"],  # the create itself
    ]

    # then every operation is exactly one request
    loaded = await store.load("run-1")
    assert loaded is not None
    run: Run = loaded.run
    operations = {
        "acquire": lambda: store.acquire("run-1", "a", 30, now=T0),
        "load": lambda: store.load("run-1"),
        "append": lambda: store.append("run-1", step(0)),
        "signal": lambda: store.signal("run-1", Signal(id="s", name="go", at=T0)),
        "append consuming": lambda: store.append("run-1", step(1), consumes="s"),
        "save": lambda: store.save(replace(run, status="sleeping", revision=run.revision + 1)),
        "due": lambda: store.due(T0, 10),
        "list_runs": lambda: store.list_runs(RunQuery(tag="a")),
        "rewind": lambda: store.rewind(replace(run, revision=run.revision + 2), 1),
        "release": lambda: store.release("run-1", "a"),
        "create": lambda: store.create(make_run("run-2")),
        "delete": lambda: store.delete("run-2"),
    }
    recorder.take()
    for name, call in operations.items():
        await call()
        sent = recorder.take()
        assert len(sent) == 1, (name, sent)
        (request,) = sent
        assert kinds(request)[-1] == "close", name  # no stream outlives the request
        assert request["baton"] is None, name

    # a steady-state step is a single statement: no transaction around it
    await store.append("run-1", step(5))
    (append,) = recorder.take()
    assert kinds(append) == ["INSERT", "close"]


async def test_a_transaction_is_begin_immediate_to_commit_in_one_batch(
    recorded: tuple[LibSQLStore, Recorder],
) -> None:
    store, recorder = recorded
    await store.create(make_run(status="waiting"))
    recorder.take()

    await store.signal("run-1", Signal(id="s", name="go", at=T0))

    (request,) = recorder.take()
    (batch, close) = request["requests"]
    steps = batch["batch"]["steps"]
    assert [s["stmt"]["sql"].split()[0] for s in steps] == [
        "BEGIN",
        "UPDATE",
        "INSERT",
        "SELECT",
        "COMMIT",
        "ROLLBACK",
    ]
    assert steps[0]["stmt"]["sql"] == "BEGIN IMMEDIATE"
    # each statement and the COMMIT run only if the step before succeeded, inside the
    # transaction; the ROLLBACK only if the COMMIT did not
    for i, s in enumerate(steps[1:5]):
        assert s["condition"] == {
            "type": "and",
            "conds": [
                {"type": "ok", "step": i},
                {"type": "not", "cond": {"type": "is_autocommit"}},
            ],
        }
    assert steps[5]["condition"] == {"type": "not", "cond": {"type": "ok", "step": 4}}
    assert close == {"type": "close"}


async def test_a_save_does_not_send_the_input(recorded: tuple[LibSQLStore, Recorder]) -> None:
    store, recorder = recorded
    marker = "x" * 50_000
    await store.create(make_run(input={"big": marker}))
    loaded = await store.load("run-1")
    assert loaded is not None
    recorder.take()

    await store.save(replace(loaded.run, status="sleeping"))

    (request,) = recorder.take()
    assert marker not in json.dumps(request)
    again = await store.load("run-1")
    assert again is not None and again.run.input == {"big": marker}


async def test_one_connection_serves_every_request(fresh: str) -> None:
    async with Proxy(fresh) as proxy:
        store = LibSQLStore(proxy.url)
        try:
            await store.create(make_run())
            for seq in range(50):
                await store.append("run-1", step(seq))
            loaded = await store.load("run-1")
        finally:
            await store.close()
    assert loaded is not None and len(loaded.checkpoints) == 50
    assert proxy.connections == 1


async def test_a_failed_statement_rolls_its_whole_transaction_back(fresh: str) -> None:
    # given a run whose seq 0 is taken and a pending signal
    store = LibSQLStore(fresh)
    try:
        await store.create(make_run(status="waiting"))
        await store.signal("run-1", Signal(id="s", name="go", at=T0))
        await store.append("run-1", step(0))

        # when a checkpoint at seq 0 tries to consume the signal: its INSERT fails
        with pytest.raises(Exception, match="already has seq 0"):
            await store.append("run-1", step(0, name="again"), consumes="s")

        # then the signal is still pending: the UPDATE after it did not run, or was rolled back
        loaded = await store.load("run-1")
        assert loaded is not None
        assert [s.id for s in loaded.signals] == ["s"]
        assert [cp.name for cp in loaded.checkpoints] == ["step"]
    finally:
        await store.close()


# -- a lost connection, a killed server: all or nothing ------------------------------------------


class Proxy:
    """A TCP proxy in front of sqld that can cut the next request in half (``cut =
    "request"``: the server never gets all of it) or swallow the next answer (``cut =
    "response"``: the server got and ran the request, the client never hears back)."""

    def __init__(self, target: str) -> None:
        self.target_port = int(target.rsplit(":", 1)[1])
        self.cut: str | None = None
        self.tripped = False
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._pipe(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def upstream() -> None:
            while data := await reader.read(65536):
                if self.cut == "request":
                    self.cut, self.tripped = None, True
                    up_writer.write(data[: len(data) // 2])
                    await up_writer.drain()
                    return
                up_writer.write(data)
                await up_writer.drain()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                if self.cut == "response":
                    self.cut, self.tripped = None, True
                    return
                writer.write(data)
                await writer.drain()

        try:
            # the first side to stop (a cut, or a peer that hung up) hangs up both
            pumps = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            for side in (writer, up_writer):
                side.close()
                with contextlib.suppress(OSError):
                    await side.wait_closed()


async def failed_run(store: LibSQLStore) -> Run:
    """A failed run with steps 0-3, a signal consumed at 2 and one pending: what a retry
    rewinds."""
    await store.create(make_run(status="running", tags=["t"]))
    for i in range(2):
        await store.signal("run-1", Signal(id=f"s-{i}", name="go", at=T0 + i))
    await store.append("run-1", step(0))
    await store.append("run-1", step(1))
    await store.append("run-1", step(2, kind="signal"), consumes="s-0")
    await store.append("run-1", step(3, error={"type": "Boom", "message": "no"}))
    loaded = await store.load("run-1")
    assert loaded is not None
    return await store.save(replace(loaded.run, status="failed", tags=["t", "failed"]))


async def state(url: str) -> tuple[Any, ...]:
    """What a fresh connection sees of run-1: status, revision, tags, seqs, pending signals."""
    store = LibSQLStore(url)
    try:
        loaded = await store.load("run-1")
        assert loaded is not None
        tagged = [r.id for r in (await store.list_runs(RunQuery(tag="failed"))).runs]
        return (
            loaded.run.status,
            loaded.run.revision,
            loaded.run.tags,
            tagged,
            [cp.seq for cp in loaded.checkpoints],
            [s.id for s in loaded.signals],
        )
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("cut", "applied"),
    [("request", False), ("response", True)],
    ids=["cut-mid-request", "answer-lost"],
)
async def test_a_connection_lost_mid_batch_applies_all_or_nothing(
    fresh: str, cut: str, applied: bool
) -> None:
    # given a failed run, and the state before and after a rewind of it to seq 1
    async with Proxy(fresh) as proxy:
        store = LibSQLStore(proxy.url)
        try:
            failed = await failed_run(store)
            before = await state(fresh)
            retry = replace(failed, status="pending", tags=["t"])

            # when the connection is lost in the middle of the rewind's one request
            proxy.cut = cut
            with pytest.raises(StoreError) as lost:
                await store.rewind(retry, 1)
            assert proxy.tripped

            # then the error names the database and the operation, and says what it means
            message = str(lost.value)
            assert "no answer to rewind of run 'run-1'" in message
            assert proxy.url in message
            assert "applied entirely or not at all" in message

            # and the server applied the whole batch (it got it all) or none of it (it did not)
            after = await state(fresh)
            if applied:
                assert after == ("pending", failed.revision + 1, ["t"], [], [0], ["s-0", "s-1"])
            else:
                assert after == before
                failed_state = ("failed", failed.revision, ["t", "failed"], ["run-1"])
                assert before == (*failed_state, [0, 1, 2, 3], ["s-1"])

            # and the same store carries on, on a new connection
            assert await store.load("run-1") is not None
        finally:
            await store.close()


BULK = 200_000


async def bulk_history(url: str, run_id: str) -> None:
    """A run with BULK checkpoints, written by one statement (appends would take minutes)."""
    store = LibSQLStore(url)
    await store.create(make_run(run_id))
    await store.close()
    client = HranaClient(url)
    try:
        await client.execute(
            "bulk",
            run_id,
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?2)"
            " INSERT INTO checkpoints (run_id, seq, kind, name, value, at, attempts)"
            " SELECT ?1, i, 'step', 'bulk', 'null', 0, 1 FROM n",
            (run_id, BULK - 1),
        )
    finally:
        await client.close()


async def count(url: str, run_id: str) -> tuple[bool, int]:
    client = HranaClient(url)
    try:
        result = await client.execute(
            "count",
            run_id,
            "SELECT EXISTS (SELECT 1 FROM runs WHERE id = ?1),"
            " (SELECT count(*) FROM checkpoints WHERE run_id = ?1)",
            (run_id,),
        )
        exists, rows = result.rows[0]
        return bool(exists), int(rows)
    finally:
        await client.close()


async def test_a_history_over_the_servers_response_limit_is_a_clear_error(fresh: str) -> None:
    await bulk_history(fresh, "long")
    store = LibSQLStore(fresh)
    try:
        with pytest.raises(StoreError, match="load of run 'long'.*--max-response-size"):
            await store.load("long")
    finally:
        await store.close()


@pytest.fixture
def own_sqld() -> Iterator[Sqld]:
    server = Sqld().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
async def test_sqld_killed_mid_batch_applies_all_or_nothing(own_sqld: Sqld) -> None:
    # given a run with a long history, and how long deleting one like it takes
    url = own_sqld.url
    await bulk_history(url, "calibrate")
    store = LibSQLStore(url)
    started = time.perf_counter()
    await store.delete("calibrate")
    took = time.perf_counter() - started
    await store.close()

    # when sqld is killed (SIGKILL) while it deletes another one: part way through the
    # delete's time, sooner and sooner until the kill lands before the answer does (the last
    # try kills as soon as the request is under way: a loaded machine makes the calibration
    # a poor guess)
    for attempt, fraction in enumerate((0.5, 0.3, 0.15, 0.05, 0.01, 0.0)):
        victim = f"victim-{attempt}"
        await bulk_history(url, victim)
        store = LibSQLStore(url)
        await store.due(T0, 1)  # connected, schema checked: the next request is the delete
        deleting = asyncio.ensure_future(store.delete(victim))
        await asyncio.sleep(took * fraction)
        if deleting.done():  # it finished first: try again, sooner
            await deleting
            await store.close()
            continue
        own_sqld.kill()
        with pytest.raises(StoreError) as lost:
            await deleting
        await store.close()
        break
    else:
        pytest.fail(f"every delete finished before the kill (a delete takes {took:.3f}s)")

    # then the error names the operation, and after a restart on the same files the delete
    # happened entirely or not at all: never a run without its history, or half a history
    assert f"no answer to delete of run '{victim}'" in str(lost.value)
    own_sqld.start()
    assert await count(url, victim) in [(True, BULK), (False, 0)]


# -- auth ----------------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(key: Ed25519PrivateKey, *, ttl: float = 3600, access: str | None = None) -> str:
    """An EdDSA JWT as sqld checks it: ``exp`` (sqld allows 60 s of leeway), and ``a`` =
    ``"ro"`` for a read-only token (none: full access)."""
    now = int(time.time())
    claims: dict[str, Any] = {"iat": now, "exp": int(now + ttl)}
    if access:
        claims["a"] = access
    header = b64url(json.dumps({"alg": "EdDSA", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    signature = key.sign(f"{header}.{payload}".encode())
    return f"{header}.{payload}.{b64url(signature)}"


class AuthServer:
    def __init__(self, server: Sqld, key: Ed25519PrivateKey) -> None:
        self.server, self.key = server, key
        self.url = server.url

    def token(self, **claims: Any) -> str:
        return mint(self.key, **claims)


@pytest.fixture(scope="module")
def auth_sqld() -> Iterator[AuthServer]:
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    server = Sqld(jwt_key=b64url(public)).start()
    try:
        yield AuthServer(server, key)
    finally:
        server.stop()


@pytest.fixture
async def auth(auth_sqld: AuthServer) -> AuthServer:
    await drop_heron_tables(auth_sqld.url, auth_sqld.token())
    store = LibSQLStore(auth_sqld.url, auth_token=auth_sqld.token())
    try:
        await store.create(make_run(status="running"))
    finally:
        await store.close()
    return auth_sqld


def assert_masked(error: BaseException, token: str | None, url: str) -> None:
    text = f"{error} {error!r} {error.args!r}"
    assert url in str(error)
    if token:
        assert token not in text
        assert mask_token(token) in str(error)
    assert error.__cause__ is None


async def test_a_full_access_token_works(auth: AuthServer) -> None:
    store = LibSQLStore.from_url(f"{auth.url}?authToken={auth.token()}")
    try:
        assert await store.acquire("run-1", "a", 30, now=T0) == Acquired.FREE
        await store.append("run-1", step(0))
        loaded = await store.load("run-1")
        assert loaded is not None and [cp.seq for cp in loaded.checkpoints] == [0]
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("no token", "Expected authorization header but none given"),
        ("expired", "The JWT has expired"),
        ("another key", "The JWT is invalid"),
        ("garbage", "The JWT is invalid"),
    ],
)
async def test_a_refused_token_is_a_clear_error(
    auth: AuthServer, case: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TURSO_AUTH_TOKEN", raising=False)
    token = {
        "no token": None,
        "expired": auth.token(ttl=-300),
        "another key": mint(Ed25519PrivateKey.generate()),
        "garbage": "not-a-jwt",
    }[case]
    store = LibSQLStore(auth.url, auth_token=token)
    try:
        with pytest.raises(LibSQLAuthError) as refused:
            await store.load("run-1")
    finally:
        await store.close()

    error = refused.value
    assert error.status == 401
    assert reason in str(error)
    assert "check the auth token" in str(error)
    assert_masked(error, token, auth.url)


async def test_a_read_only_token_reads_and_is_refused_writing(auth: AuthServer) -> None:
    token = auth.token(access="ro")
    store = LibSQLStore(auth.url, auth_token=token)
    try:
        loaded = await store.load("run-1")  # reading is allowed
        assert loaded is not None

        for write in (
            lambda: store.append("run-1", step(0)),
            lambda: store.acquire("run-1", "a", 30, now=T0),
            lambda: store.save(loaded.run),
        ):
            with pytest.raises(LibSQLAuthError) as denied:
                await write()
            assert denied.value.status == 403
            assert "doesn't not have Write permission" in str(denied.value)  # sqld's words
            assert "read-only token cannot write" in str(denied.value)
            assert_masked(denied.value, token, auth.url)
    finally:
        await store.close()

    # and nothing was written
    reader = LibSQLStore(auth.url, auth_token=auth.token())
    try:
        again = await reader.load("run-1")
        assert again == loaded
    finally:
        await reader.close()


async def test_a_token_in_the_url_never_shows_in_errors(auth: AuthServer) -> None:
    token = auth.token(ttl=-300)
    store = open_store(f"{auth.url}?authToken={token}")
    try:
        with pytest.raises(LibSQLAuthError) as refused:
            await store.due(T0, 10)
    finally:
        await store.close()
    assert_masked(refused.value, token, auth.url)
    assert f"{auth.url}?" not in str(refused.value)  # the URL is shown without its query


async def test_the_token_from_the_environment(
    auth: AuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TURSO_AUTH_TOKEN", auth.token())
    store = open_store(auth.url)
    try:
        assert [r.id for r in (await store.list_runs(RunQuery())).runs] == ["run-1"]
    finally:
        await store.close()


# -- other bad input -----------------------------------------------------------------------------


async def test_a_file_in_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    store = open_store(f"file:{missing / 'heron.db'}")
    try:
        with pytest.raises(StoreError, match=f"the directory {missing} does not exist"):
            await store.create(make_run())
    finally:
        await store.close()
    assert not missing.exists()  # nothing was created on the way


async def test_no_server_is_an_error_naming_the_url_and_the_operation() -> None:
    from tests.backends.libsql import free_port

    url = f"http://127.0.0.1:{free_port()}"
    store = LibSQLStore(url, auth_token="secret-token", timeout=2)
    try:
        with pytest.raises(StoreError) as lost:
            await store.load("run-1")
    finally:
        await store.close()
    assert url in str(lost.value) and "ensure_schema" in str(lost.value)
    assert_masked(lost.value, "secret-token", url)


async def test_a_server_that_is_not_libsql(tmp_path: Path) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\n\r\nnot here!")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    store = LibSQLStore(url)
    try:
        with pytest.raises(StoreError, match="HTTP 404: not here!.*Hrana 3 over HTTP"):
            await store.due(T0, 1)
    finally:
        await store.close()
        server.close()
        await server.wait_closed()


async def test_due_of_infinity_and_values_json_cannot_carry(fresh: str) -> None:
    store = LibSQLStore(fresh)
    try:
        await store.create(make_run(wake_at=T0 + 1e9))
        # "everything scheduled", as the engine asks when it drives runs to the end
        assert await store.due(math.inf, 10) == ["run-1"]
        # a value Hrana's JSON cannot carry is refused, naming the operation, nothing sent
        with pytest.raises(
            StoreError, match="save of run 'run-1'.*cannot travel.*nothing was sent"
        ):
            await store.save(make_run(wake_at=math.inf))
        loaded = await store.load("run-1")
        assert loaded is not None and loaded.run.wake_at == T0 + 1e9
    finally:
        await store.close()


# -- the schema ----------------------------------------------------------------------------------


async def test_a_version_1_schema_migrates_over_hrana(fresh: str) -> None:
    # given a database holding Heron 0.2's schema and one run (PRAGMAs are SQLite-only)
    client = HranaClient(fresh)
    try:
        ddl = [(sql, ()) for sql in V1_DDL if not sql.startswith("PRAGMA")]
        fields = V1_RUN.header_fields()
        insert = (
            f"INSERT INTO runs ({', '.join(fields)}) VALUES ({', '.join('?' * len(fields))})",
            tuple(fields.values()),
        )
        await client.transaction("v1", None, [*ddl, insert], write=True)
    finally:
        await client.close()

    # when a store uses it without auto_schema, then with ensure_schema
    store = LibSQLStore(fresh, auto_schema=False)
    try:
        with pytest.raises(SchemaMissing, match="schema version 1"):
            await store.load(V1_RUN.id)
        await store.ensure_schema()

        # then the data is there and version 2 works
        loaded = await store.load(V1_RUN.id)
        assert loaded is not None and loaded.run == V1_RUN
        await store.signal(V1_RUN.id, Signal(id="s", name="approved", at=T0))
        await store.append(V1_RUN.id, step(0, order=3), consumes="s")
        again = await store.load(V1_RUN.id)
        assert again is not None and again.signals == [] and again.checkpoints[0].order == 3
    finally:
        await store.close()

    client = HranaClient(fresh)
    try:
        version = await client.execute("v", None, "SELECT version FROM heron_schema", ())
        assert version.rows == [(SCHEMA_VERSION,)]
    finally:
        await client.close()


# -- Turso itself ----------------------------------------------------------------------------------


async def check_against_turso() -> None:
    """A smoke test against a real Turso database, collected only where one is configured
    (``TURSO_DATABASE_URL`` and ``TURSO_AUTH_TOKEN``): CI has none and never generates it, so
    it is never skipped there; the suite above runs everything against a real sqld."""
    # Heron's tables are created in that database if missing; the runs here are deleted after.
    store = open_store(os.environ["TURSO_DATABASE_URL"])
    run_id = f"heron-test-{uuid.uuid4().hex}"
    try:
        assert await store.create(make_run(run_id, status="pending", wake_at=T0))
        assert await store.acquire(run_id, "a", 30, now=T0) == Acquired.FREE
        await store.append(run_id, step(0, value={"é": [1, 2.5, None]}))
        assert await store.signal(run_id, Signal(id="s", name="go", payload={"x": 1}, at=T0))
        await store.append(run_id, step(1, kind="signal"), consumes="s")
        loaded = await store.load(run_id)
        assert loaded is not None
        assert [cp.seq for cp in loaded.checkpoints] == [0, 1] and loaded.signals == []
        saved = await store.save(replace(loaded.run, status="completed", wake_at=None))
        assert saved.revision == loaded.run.revision + 1
        await store.release(run_id, "a")
    finally:
        await store.delete(run_id)
        assert await store.load(run_id) is None
        await store.close()


if os.environ.get("TURSO_DATABASE_URL") and os.environ.get("TURSO_AUTH_TOKEN"):
    test_against_turso = check_against_turso
