"""What only ``KVStore`` and its drivers promise: write order under a crash, non-atomic drivers,
the file driver across processes, retention, foreign values, the Upstash protocol (through the
PROTOCOL DOUBLE in ``tests/backends/kv.py``) and round trips per step.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from heron.stores import Run, RunQuery, Signal, StoreError, open_store
from heron.stores._http import HttpxTransport
from heron.stores.kv import FileDriver, KVStore, MemoryDriver
from heron.stores.kv._driver import Version
from heron.stores.kv._store import escape, sortable, unescape, unsortable
from heron.stores.kv.upstash import UpstashDriver
from tests.backends.kv import UpstashDouble
from tests.backends.redis import free_port, with_query
from tests.contract.test_contract import make_run, step
from tests.contract.test_redis import CountingConnection

T0 = 1_700_000_000.0
REPO = Path(__file__).resolve().parents[2]


class Crash(BaseException):
    """The process died (a kill -9 between two writes)."""


class CrashingDriver:
    """Passes everything to ``inner``, except that write number ``at`` (0-based) never happens:
    the "process" dies just before it. ``writes`` counts the writes attempted."""

    def __init__(self, inner: Any, at: int | None = None) -> None:
        self.inner = inner
        self.at = at
        self.writes = 0
        self.atomic = inner.atomic
        self.supports_ttl = inner.supports_ttl
        if hasattr(inner, "version_of"):
            self.version_of = inner.version_of

    async def _write(self, op: str, *args: Any, **kwargs: Any) -> Any:
        n, self.writes = self.writes, self.writes + 1
        if n == self.at:
            raise Crash(f"killed before write {n} ({op} {args[0]!r})")
        return await getattr(self.inner, op)(*args, **kwargs)

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        await self._write("set", key, value, ttl=ttl)

    async def set_if_absent(self, key: str, value: bytes, *, ttl: float | None = None) -> bool:
        return bool(await self._write("set_if_absent", key, value, ttl=ttl))

    async def compare_and_set(
        self, key: str, value: bytes, version: Version, *, ttl: float | None = None
    ) -> bool:
        return bool(await self._write("compare_and_set", key, value, version, ttl=ttl))

    async def delete(self, key: str, *, version: Version | None = None) -> bool:
        return bool(await self._write("delete", key, version=version))

    async def get(self, key: str) -> Any:
        return await self.inner.get(key)

    async def get_many(self, keys: Sequence[str]) -> Any:
        return await self.inner.get_many(keys)

    async def keys(self, prefix: str, **kwargs: Any) -> list[str]:
        return list(await self.inner.keys(prefix, **kwargs))

    async def close(self) -> None:
        await self.inner.close()

    def __repr__(self) -> str:
        return f"CrashingDriver({self.inner!r})"


class NonAtomicDriver(MemoryDriver):
    """A driver that can only read, then write: ``set_if_absent`` and ``compare_and_set`` are a
    ``get`` and a ``set`` with an await between them, and it says so (``atomic = False``)."""

    atomic = False

    async def set_if_absent(self, key: str, value: bytes, *, ttl: float | None = None) -> bool:
        if await self.get(key) is not None:
            return False
        await asyncio.sleep(0)
        await self.set(key, value, ttl=ttl)
        return True

    async def compare_and_set(
        self, key: str, value: bytes, version: Version, *, ttl: float | None = None
    ) -> bool:
        current = await self.get(key)
        if current is None or current[1] != version:
            return False
        await asyncio.sleep(0)
        await self.set(key, value, ttl=ttl)
        return True


# -- the write order: a crash anywhere yields at worst a spurious wake, never a lost one -----------

Step = Callable[[KVStore], Awaitable[Any]]


async def _prepare(store: KVStore) -> None:
    await store.create(make_run("run-1", status="running", wake_at=T0 + 30, tags=["t"]))
    await store.append("run-1", step(0))
    await store.create(make_run("run-w", status="waiting"))


async def _save(store: KVStore) -> Any:
    run = (await store.load("run-1")).run  # type: ignore[union-attr]
    return await store.save(replace(run, status="sleeping", wake_at=T0 + 100))


async def _finish(store: KVStore) -> Any:
    run = (await store.load("run-1")).run  # type: ignore[union-attr]
    return await store.save(replace(run, status="completed", wake_at=None))


async def _rewind(store: KVStore) -> Any:
    run = (await store.load("run-1")).run  # type: ignore[union-attr]
    return await store.rewind(replace(run, status="pending", wake_at=T0 + 1), 0)


OPERATIONS: dict[str, Step] = {
    "create": lambda s: s.create(make_run("run-2", status="pending", wake_at=T0 + 7)),
    "save": _save,
    "finish": _finish,
    "signal": lambda s: s.signal("run-w", Signal(id="s", name="go", at=T0 + 5)),
    "acquire": lambda s: s.acquire("run-1", "tok", 60, now=T0 + 40, due_only=True),
    "rewind": _rewind,
    "delete": lambda s: s.delete("run-1"),
}


async def _assert_no_wake_lost(driver: Any) -> None:
    """Every run whose document has a wake_at is returned by due at that time, and due never
    returns a run whose document is not due."""
    store = KVStore(driver)
    for run_id in ("run-1", "run-2", "run-w"):
        loaded = await store.load(run_id)
        if loaded is not None and loaded.run.wake_at is not None:
            assert run_id in await store.due(loaded.run.wake_at, 100), run_id
    for now in (T0, T0 + 6, T0 + 10, T0 + 40, T0 + 101, T0 + 1000):
        for run_id in await store.due(now, 100):
            loaded = await store.load(run_id)
            assert loaded is not None and loaded.run.wake_at is not None
            assert loaded.run.wake_at <= now, (run_id, now)


@pytest.mark.parametrize("driver_class", [MemoryDriver, NonAtomicDriver])
@pytest.mark.parametrize("operation", list(OPERATIONS))
async def test_a_crash_between_any_two_writes_never_loses_a_wake(
    operation: str, driver_class: type[MemoryDriver]
) -> None:
    # how many writes the operation makes when nothing goes wrong
    probe = CrashingDriver(driver_class())
    await _prepare(KVStore(probe))
    before = probe.writes
    await OPERATIONS[operation](KVStore(probe))
    writes = probe.writes - before
    assert writes >= 1

    for crash_at in range(writes):
        # given the state before the operation, on a driver that dies before write `crash_at`
        inner = driver_class()
        await _prepare(KVStore(inner))
        dying = CrashingDriver(inner, at=crash_at)

        # when the operation dies there
        with pytest.raises(Crash):
            await OPERATIONS[operation](KVStore(dying))

        # then every wake a document holds is in the index, and due returns nothing stale
        await _assert_no_wake_lost(inner)
        # and the operation can be done again by another instance
        await OPERATIONS[operation](KVStore(inner))
        await _assert_no_wake_lost(inner)


async def test_a_non_atomic_driver_makes_the_lease_best_effort_and_says_so() -> None:
    store = KVStore(NonAtomicDriver())
    assert store.atomic_lease is False
    assert KVStore(MemoryDriver()).atomic_lease is True
    # the contract still holds in sequence
    await store.create(make_run(status="pending", wake_at=T0))
    assert await store.acquire("run-1", "a", 30, now=T0)
    assert not await store.acquire("run-1", "b", 30, now=T0 + 1)


async def test_stale_wake_entries_are_skipped_and_removed_by_due() -> None:
    driver = MemoryDriver()
    store = KVStore(driver)
    await store.create(make_run(status="sleeping", wake_at=T0 + 10))
    stale = store._wake_key("run-1", "oldinc", 1, T0)  # a leftover of an older write
    await driver.set(stale, b"")

    assert await store.due(T0 + 5, 10) == []
    assert await driver.get(stale) is None
    assert await store.due(T0 + 10, 10) == ["run-1"]


def test_escaping_keeps_keys_one_segment_and_floats_sortable() -> None:
    for text in ["", "a", "a/b.c", "é 🐦", "%41", "~", "run-1"]:
        assert "/" not in escape(text) and "." not in escape(text)
        assert unescape(escape(text)) == text
    values = [-5.0, 0.0, 1.5, T0, T0 + 1e-6]
    assert [unsortable(sortable(v)) for v in values] == values
    assert sorted(sortable(v) for v in values) == [sortable(v) for v in values]


# -- retention and TTL ------------------------------------------------------------------------


def test_retention_on_a_driver_without_ttl_is_refused_at_open(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="TTL"):
        open_store(f"kv+file:///{tmp_path}/kv?retention_days=30")
    with pytest.raises(ValueError, match="TTL"):
        KVStore(FileDriver(tmp_path), retention_days=1)


async def test_a_finished_run_expires_and_create_reaps_its_checkpoints() -> None:
    driver = MemoryDriver()
    store = KVStore(driver, retention_days=0.2 / 86_400)  # 200 ms
    await store.create(make_run(status="running", tags=["t"]))
    await store.append("run-1", step(0))
    run = (await store.load("run-1")).run  # type: ignore[union-attr]
    await store.save(replace(run, status="completed"))
    assert await driver.keys("heron/exp/") != []

    time.sleep(0.3)
    assert await store.load("run-1") is None
    assert (await store.list_runs(RunQuery())).runs == []

    await store.create(make_run("run-2"))
    assert await driver.keys("heron/cp/run-1/") == []
    assert await driver.keys("heron/exp/") == []


# -- foreign values ----------------------------------------------------------------------------


async def test_a_document_key_holding_a_foreign_value_is_named_and_kept() -> None:
    driver = MemoryDriver()
    store = KVStore(driver)
    await driver.set("heron/run/run-1", b"not ours")

    with pytest.raises(StoreError, match="heron/run/run-1"):
        await store.create(make_run())
    with pytest.raises(StoreError, match="heron/run/run-1"):
        await store.load("run-1")
    with pytest.raises(StoreError, match="heron/run/run-1"):
        await store.signal("run-1", Signal(id="s", name="go", at=T0))
    assert await driver.get("heron/run/run-1") == (b"not ours", b"not ours")


async def test_a_redis_key_of_another_type_is_named_and_kept(redis_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    raw = redis.asyncio.from_url(redis_url)
    store = open_store(with_query("kv+" + redis_url, prefix=prefix))
    try:
        await raw.hset(f"{prefix}/run/run-1", "field", "theirs")
        with pytest.raises(StoreError, match=f"{prefix}/run/run-1"):
            await store.create(make_run())
        with pytest.raises(StoreError, match=f"{prefix}/run/run-1"):
            await store.load("run-1")
        assert await raw.hgetall(f"{prefix}/run/run-1") == {b"field": b"theirs"}
    finally:
        await store.close()
        await raw.aclose()


# -- round trips per step -----------------------------------------------------------------------


async def test_a_step_on_the_redis_driver_is_one_round_trip(redis_url: str) -> None:
    store = open_store(
        with_query("kv+" + redis_url, prefix=f"t{uuid.uuid4().hex[:12]}"),
        connection_class=CountingConnection,
    )
    try:
        await store.create(make_run(status="running"))
        await store.append("run-1", step(0))
        CountingConnection.sent = []
        for seq in range(1, 11):
            await store.append("run-1", step(seq))
        assert CountingConnection.sent == ["EVALSHA"] * 10
    finally:
        await store.close()


async def test_a_step_on_upstash_is_one_http_request(upstash_double: UpstashDouble) -> None:
    url = f"kv+upstash://127.0.0.1:{upstash_double.port}?tls=0&prefix=t{uuid.uuid4().hex[:8]}"
    store = open_store(url, token=upstash_double.token)
    try:
        await store.create(make_run(status="running"))
        await store.append("run-1", step(0))
        before = upstash_double.requests
        for seq in range(1, 11):
            await store.append("run-1", step(seq))
        assert upstash_double.requests - before == 10
        assert [cp.seq for cp in (await store.load("run-1")).checkpoints] == list(range(11))  # type: ignore[union-attr]
    finally:
        await store.close()


# -- Upstash: transport, token, errors -----------------------------------------------------------


class CountingTransport(HttpxTransport):
    """Any ``HttpTransport`` can carry the driver (a Pyodide ``fetch`` one in a Worker)."""

    def __init__(self) -> None:
        super().__init__(timeout=5)
        self.posts: list[str] = []

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        self.posts.append(url)
        return await super().post(url, headers, body)


async def test_the_upstash_driver_speaks_through_the_transport_it_is_given(
    upstash_double: UpstashDouble,
) -> None:
    transport = CountingTransport()
    driver = UpstashDriver(upstash_double.base, upstash_double.token, transport=transport)
    store = KVStore(driver, prefix=f"t{uuid.uuid4().hex[:8]}")
    try:
        assert await store.create(make_run())
        assert (await store.load("run-1")) is not None
        assert transport.posts and set(transport.posts) == {upstash_double.base}
    finally:
        await store.close()
        await transport.aclose()


async def test_a_wrong_upstash_token_is_a_clear_error_without_the_token(
    upstash_double: UpstashDouble,
) -> None:
    store = open_store(f"kv+upstash://:n0t-the-t0ken@127.0.0.1:{upstash_double.port}?tls=0")
    try:
        with pytest.raises(StoreError, match="refused the token") as error:
            await store.load("run-1")
    finally:
        await store.close()
    assert "n0t-the-t0ken" not in str(error.value)


async def test_an_unreachable_upstash_is_named() -> None:
    port = free_port()
    store = open_store(f"kv+upstash://127.0.0.1:{port}?tls=0&token=secret-t0ken")
    try:
        with pytest.raises(StoreError, match=f"cannot reach Upstash at http://127.0.0.1:{port}"):
            await store.load("run-1")
    finally:
        await store.close()


async def test_the_upstash_url_and_token_come_from_the_environment(
    upstash_double: UpstashDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", upstash_double.base)
    monkeypatch.setenv("UPSTASH_REDIS_REST_TOKEN", upstash_double.token)
    store = open_store(f"kv+upstash://?prefix=t{uuid.uuid4().hex[:8]}")
    try:
        assert await store.create(make_run())
    finally:
        await store.close()


async def test_the_protocol_double_answers_pipeline_and_multi_exec(
    upstash_double: UpstashDouble,
) -> None:
    # the double speaks the parts of the protocol the driver does not use yet, as Upstash does
    transport = HttpxTransport(timeout=5)
    headers = {"Authorization": f"Bearer {upstash_double.token}"}
    key = f"t{uuid.uuid4().hex[:8]}"
    try:
        status, body = await transport.post(
            upstash_double.base + "/pipeline",
            headers,
            f'[["SET","{key}","1"],["INCR","{key}"],["HSET","{key}","f","v"]]'.encode(),
        )
        assert status == 200
        assert body.startswith(b'[{"result": "OK"}, {"result": 2}, {"error": "WRONGTYPE')
        status, body = await transport.post(
            upstash_double.base + "/multi-exec", headers, f'[["INCR","{key}"]]'.encode()
        )
        assert (status, body) == (200, b'[{"result": 3}]')
    finally:
        await transport.aclose()


# -- the file driver across processes ---------------------------------------------------------

_INCREMENTER = textwrap.dedent(
    """
    import asyncio, sys
    from heron.stores.kv import FileDriver

    async def main(root, n):
        driver = FileDriver(root)
        done = 0
        while done < n:
            got = await driver.get("counter")
            if got is None:
                await driver.set_if_absent("counter", b"0")
                continue
            value, version = got
            if await driver.compare_and_set("counter", str(int(value) + 1).encode(), version):
                done += 1
        await driver.close()

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


def test_the_file_driver_compare_and_set_holds_across_processes(tmp_path: Path) -> None:
    # given four processes that each increment one counter 100 times by compare-and-set
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _INCREMENTER, str(tmp_path), "100"],
            cwd=REPO,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()

    # then no increment was lost: every compare-and-set that won saw the value before it
    assert (tmp_path / "counter").read_bytes() == b"400"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


async def test_the_file_driver_lists_ranges_in_key_order(tmp_path: Path) -> None:
    driver = FileDriver(tmp_path)
    keys = ["a/b", "a.c", "a/b/c", "a/bb", "ab", "a/c/d"]
    for key in keys[:2] + keys[3:]:
        await driver.set(key, b"x")
    with pytest.raises(NotADirectoryError):
        await driver.set("a/b/c", b"x")  # a/b is a value, not a folder
    everything = sorted(k for k in keys if k != "a/b/c")

    assert await driver.keys("") == everything
    assert await driver.keys("a/") == ["a/b", "a/bb", "a/c/d"]
    assert await driver.keys("a/b") == ["a/b", "a/bb"]
    assert await driver.keys("", start="a/bb", end="ab") == ["a/bb", "a/c/d"]
    assert await driver.keys("", reverse=True, limit=2) == ["ab", "a/c/d"]
    assert await driver.keys("a/", end="a/c", reverse=True) == ["a/bb", "a/b"]


async def test_a_file_run_id_with_any_characters_round_trips(tmp_path: Path) -> None:
    store = open_store(f"kv+file:///{tmp_path}/kv")
    run = make_run("../ét/é 🐦.json", tags=["a/b", ""], parent_id="p.q")
    try:
        assert await store.create(run)
        await store.append(run.id, step(0))
        loaded = await store.load(run.id)
        assert loaded is not None and loaded.run == run
        assert [r.id for r in (await store.list_runs(RunQuery(tag=""))).runs] == [run.id]
    finally:
        await store.close()
    assert all(p.resolve().is_relative_to(tmp_path) for p in tmp_path.rglob("*"))


def _unused(_: Run) -> None:  # keeps the Run import for type checkers
    return None


@pytest.mark.parametrize(
    "url", ["kv+file:///tmp/heron-kv?fsync=maybe", "kv+upstash://127.0.0.1:1?tls=nope&token=t"]
)
def test_a_boolean_option_that_is_not_one_is_named(url: str) -> None:
    with pytest.raises(ValueError, match=r"URL option (fsync='maybe'|tls='nope') is not a boolean"):
        open_store(url)


async def test_a_repeated_create_leaves_no_index_entry_behind(tmp_path: Path) -> None:
    # given a run, started again and again under its id (Runtime.start is idempotent)
    store = open_store(f"kv+file:///{tmp_path}/kv")
    assert isinstance(store, KVStore)
    run = Run(id="r-1", workflow="wf", input=None, tags=["t"], wake_at=1.0)
    assert await store.create(run)
    before = await store.driver.keys(f"{store.prefix}/", limit=1000)

    for _ in range(5):
        assert not await store.create(replace(run, created_at=run.created_at + 1))

    # then the store holds exactly the keys it held after the first create
    assert await store.driver.keys(f"{store.prefix}/", limit=1000) == before
    assert await store.due(2.0, 10) == ["r-1"]


async def test_one_unreadable_record_does_not_stop_due_or_listing(tmp_path: Path) -> None:
    # given two due runs, and one of their records cut short on disk (a full disk, say)
    store = open_store(f"kv+file:///{tmp_path}/kv")
    assert isinstance(store, KVStore)
    for run_id in ("good", "bad"):
        assert await store.create(Run(id=run_id, workflow="wf", input=None, wake_at=1.0))
    path = store.driver._path(store._run_key("bad"))  # type: ignore[attr-defined]
    path.write_bytes(path.read_bytes()[:20])
    reopened = open_store(f"kv+file:///{tmp_path}/kv")

    # then the good run is still swept and listed; the bad one is passed over, not deleted
    assert await reopened.due(2.0, 10) == ["good"]
    assert [r.id for r in (await reopened.list_runs(RunQuery())).runs] == ["good"]
    with pytest.raises(StoreError):
        await reopened.load("bad")
    assert path.exists()


def test_a_key_too_long_for_a_file_name_is_a_store_error(tmp_path: Path) -> None:
    driver = FileDriver(str(tmp_path / "kv"))

    with pytest.raises(StoreError, match="longer than a file name may be"):
        driver._path("heron/run/" + "a" * 300)


async def test_a_short_write_is_finished_and_a_full_disk_keeps_the_old_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    from heron.stores.kv import file as file_driver

    driver = FileDriver(str(tmp_path / "kv"))
    real_write = os.write

    # a disk that takes three bytes a write: every byte still lands
    monkeypatch.setattr(file_driver.os, "write", lambda fd, data: real_write(fd, data[:3]))
    await driver.set("heron/k", b"0123456789")
    assert (await driver.get("heron/k") or (b"",))[0] == b"0123456789"

    # a full disk: the write fails as a StoreError, the old value stays, no temporary file
    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(file_driver.os, "write", full)
    with pytest.raises(StoreError, match="No space left on device"):
        await driver.set("heron/k", b"new value")
    assert (await driver.get("heron/k") or (b"",))[0] == b"0123456789"
    assert [p.name for p in (tmp_path / "kv" / "heron").iterdir()] == ["k"]
