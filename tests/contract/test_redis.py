"""What only ``RedisStore`` promises, on the session's real redis-server (``redis_url``).

Round trips are counted at the connection: ``CountingConnection`` counts every
``send_packed_command``, which redis-py calls once per command and once per pipeline, i.e.
once per round trip.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio
from redis.asyncio.connection import Connection
from redis.crc import key_slot

from heron.stores import Checkpoint, RunQuery, Signal, StoreError, open_store
from heron.stores.redis import RedisStore, created_at_of, created_key, mask_url
from tests.backends.redis import RedisServer, free_port, with_query
from tests.contract.test_contract import make_run, step

T0 = 1_700_000_000.0


class CountingConnection(Connection):
    """A redis-py connection that records what it sends: one entry per round trip."""

    sent: list[str] = []

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        first = command if isinstance(command, bytes | str) else b"".join(command)
        name = first.split(b"\r\n")[2] if isinstance(first, bytes) else first
        CountingConnection.sent.append(name.decode().upper() if isinstance(name, bytes) else name)
        await super().send_packed_command(command, check_health)


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def store(redis_url: str, prefix: str) -> AsyncIterator[RedisStore]:
    CountingConnection.sent = []
    s = RedisStore.from_url(
        with_query(redis_url, prefix=prefix), connection_class=CountingConnection
    )
    try:
        yield s
    finally:
        await s.close()


def sent() -> list[str]:
    out, CountingConnection.sent = CountingConnection.sent, []
    return out


# -- one round trip per call ------------------------------------------------------------------


async def test_a_steady_state_step_is_one_round_trip(store: RedisStore) -> None:
    await store.create(make_run(status="running"))
    await store.append("run-1", step(0))  # the first call may load the script
    sent()

    for seq in range(1, 11):
        await store.append("run-1", step(seq, value={"i": seq}))

    assert sent() == ["EVALSHA"] * 10


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        ("load", ["MULTI"]),  # MULTI, 4 x HGETALL, EXEC: one pipelined round trip
        ("due", ["ZRANGEBYSCORE"]),
        ("signal", ["EVALSHA"]),
        ("save", ["EVALSHA"]),
        ("acquire", ["EVALSHA"]),
        ("release", ["EVALSHA"]),
        ("create", ["EVALSHA"]),
        ("delete", ["EVALSHA"]),
    ],
)
async def test_each_operation_is_one_round_trip(
    store: RedisStore, operation: str, expected: list[str]
) -> None:
    await store.create(make_run(status="running", wake_at=T0))
    run = (await store.load("run-1")).run  # type: ignore[union-attr]
    calls = {
        "load": lambda: store.load("run-1"),
        "due": lambda: store.due(T0, 10),
        "signal": lambda: store.signal("run-1", Signal(id="s", name="go", at=T0)),
        "save": lambda: store.save(replace(run, status="sleeping")),
        "acquire": lambda: store.acquire("run-1", "a", 30, now=T0),
        "release": lambda: store.release("run-1", "a"),
        "create": lambda: store.create(make_run("run-2")),
        "delete": lambda: store.delete("run-1"),
    }
    await calls[operation]()  # warm: the script is loaded on the server by the first call
    await store.create(make_run("run-1", status="running", wake_at=T0))
    run = (await store.load("run-1")).run  # type: ignore[union-attr]
    await store.delete("run-2")
    sent()

    await calls[operation]()

    assert sent() == expected


async def test_scripts_are_called_by_sha_and_sent_again_after_a_script_flush(
    store: RedisStore, raw: redis.asyncio.Redis
) -> None:
    # given a server that has forgotten every script (and a connection already open)
    await store.due(T0, 1)
    await raw.script_flush()
    sent()

    # when the store appends twice
    await store.create(make_run(status="running"))
    await store.append("run-1", step(0))
    await store.append("run-1", step(1))

    # then the first call of each script found NOSCRIPT and sent the source once; then by SHA
    assert sent() == ["EVALSHA", "EVAL", "EVALSHA", "EVAL", "EVALSHA"]
    assert [cp.seq for cp in (await store.load("run-1")).checkpoints] == [0, 1]  # type: ignore[union-attr]


# -- keys: one slot per run, nothing left after delete ---------------------------------------------


async def test_every_key_of_a_run_is_in_one_cluster_slot(
    store: RedisStore, raw: redis.asyncio.Redis, prefix: str
) -> None:
    await store.create(make_run("ord/{1}", status="waiting", tags=["t"]))
    await store.append("ord/{1}", step(0))
    await store.signal("ord/{1}", Signal(id="s", name="go", at=T0))
    await store.append("ord/{1}", step(1, kind="signal"), consumes="s")

    keys = [k.decode() async for k in raw.scan_iter(match=f"{prefix}*")]
    per_run = [k for k in keys if ":{" in k]
    assert len(per_run) == 4
    assert len({key_slot(k.encode()) for k in per_run}) == 1


async def test_delete_leaves_no_key_behind(
    store: RedisStore, raw: redis.asyncio.Redis, prefix: str
) -> None:
    await store.create(make_run(status="waiting", tags=["a", "b"], parent_id="p", wake_at=T0))
    await store.append("run-1", step(0))
    await store.signal("run-1", Signal(id="s", name="go", at=T0))
    await store.append("run-1", step(1, kind="signal"), consumes="s")
    await store.acquire("run-1", "tok", 30, now=T0)

    await store.delete("run-1")

    assert [k async for k in raw.scan_iter(match=f"{prefix}*")] == []


def test_created_key_sorts_as_the_float_and_round_trips() -> None:
    values = [-1e300, -2.5, -0.0001, 0.0, 1e-300, 1.0, T0, T0 + 0.000001, 1e300]
    keys = [created_key(v) for v in values]
    assert keys == sorted(keys)
    assert [created_at_of(k) for k in keys] == values


# -- foreign keys: a clear error, nothing overwritten ---------------------------------------------


async def test_a_header_key_of_another_type_is_named_and_kept(
    store: RedisStore, raw: redis.asyncio.Redis, prefix: str
) -> None:
    key = f"{prefix}run:{{run-1}}"
    await raw.set(key, "someone else's")

    for call in (
        store.create(make_run()),
        store.append("run-1", step(0)),
        store.signal("run-1", Signal(id="s", name="go", at=T0)),
        store.save(make_run()),
        store.acquire("run-1", "a", 30, now=T0),
        store.delete("run-1"),
    ):
        with pytest.raises(StoreError, match=key.replace("{", r"\{").replace("}", r"\}")):
            await call

    assert await raw.get(key) == b"someone else's"


async def test_a_hash_heron_did_not_write_is_named_and_kept(
    store: RedisStore, raw: redis.asyncio.Redis, prefix: str
) -> None:
    key = f"{prefix}run:{{run-1}}"
    await raw.hset(key, mapping={"status": "mine", "revision": "0"})

    with pytest.raises(StoreError, match="_heron"):
        await store.save(make_run())
    with pytest.raises(StoreError, match="not a Heron run header"):
        await store.load("run-1")
    with pytest.raises(StoreError, match="_heron"):
        await store.create(make_run())
    assert await raw.hgetall(key) == {b"status": b"mine", b"revision": b"0"}


async def test_a_global_index_of_another_type_stops_create_before_it_writes(
    store: RedisStore, raw: redis.asyncio.Redis, prefix: str
) -> None:
    await raw.set(f"{prefix}due", "not a sorted set")

    with pytest.raises(StoreError, match=f"{prefix}due"):
        await store.create(make_run(wake_at=T0))

    assert await raw.exists(f"{prefix}run:{{run-1}}") == 0
    assert await raw.get(f"{prefix}due") == b"not a sorted set"


# -- connection errors, passwords ---------------------------------------------------------------


async def test_an_unreachable_server_is_named_with_its_password_masked() -> None:
    port = free_port()  # nothing listens there
    store = open_store(f"redis://app:s3cret-pw@127.0.0.1:{port}/0?socket_connect_timeout=1")
    try:
        with pytest.raises(StoreError) as error:
            await store.load("run-1")
    finally:
        await store.close()
    message = str(error.value)
    assert f"redis://app:***@127.0.0.1:{port}/0" in message
    assert "s3cret-pw" not in message and "cannot reach Redis" in message


def test_mask_url() -> None:
    assert mask_url("rediss://:pw@h:6380/1") == "rediss://:***@h:6380/1"
    assert mask_url("redis://h:6379") == "redis://h:6379"


@pytest.fixture(scope="module")
def password_server() -> Iterator[RedisServer]:
    server = RedisServer("redis-server", "--requirepass", "p4ss-w0rd")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_the_password_comes_from_heron_redis_password(
    password_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HERON_REDIS_PASSWORD", "p4ss-w0rd")
    store = open_store(password_server.url)
    try:
        assert await store.create(make_run())
        assert (await store.load("run-1")) is not None
    finally:
        await store.close()


async def test_a_wrong_password_is_a_clear_error_without_the_password(
    password_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HERON_REDIS_PASSWORD", raising=False)
    url = password_server.url.replace("redis://", "redis://:wr0ng@")
    store = open_store(url)
    try:
        with pytest.raises(StoreError, match="refused the credentials") as error:
            await store.load("run-1")
    finally:
        await store.close()
    assert "wr0ng" not in str(error.value) and ":***@" in str(error.value)


# -- retention -------------------------------------------------------------------------------


async def test_a_finished_run_expires_and_a_retried_one_does_not(
    redis_url: str, raw: redis.asyncio.Redis, prefix: str
) -> None:
    store = open_store(with_query(redis_url, prefix=prefix, retention_days="1"))
    try:
        await store.create(make_run(status="running"))
        await store.append("run-1", step(0))
        await store.signal("run-1", Signal(id="s", name="go", at=T0))
        run = (await store.load("run-1")).run  # type: ignore[union-attr]
        keys = [f"{prefix}{k}:{{run-1}}" for k in ("run", "cp", "sig")]

        # when it finishes: every key of the run gets a TTL of a day
        done = await store.save(replace(run, status="completed"))
        ttls = [await raw.pttl(k) for k in keys]
        assert all(86_390_000 < ttl <= 86_400_000 for ttl in ttls), ttls
        assert await raw.zscore(f"{prefix}expiring", "run-1") is not None

        # when it is retried: the TTL goes
        await store.save(replace(done, status="pending"))
        assert [await raw.pttl(k) for k in keys] == [-1, -1, -1]
        assert await raw.zscore(f"{prefix}expiring", "run-1") is None
    finally:
        await store.close()


async def test_an_expired_run_leaves_the_indexes_at_the_next_create(
    redis_url: str, raw: redis.asyncio.Redis, prefix: str
) -> None:
    retention = 0.2 / 86_400  # 200 ms
    store = open_store(with_query(redis_url, prefix=prefix, retention_days=str(retention)))
    try:
        await store.create(make_run(status="running", tags=["t"], wake_at=T0))
        run = (await store.load("run-1")).run  # type: ignore[union-attr]
        await store.save(replace(run, status="failed"))
        deadline = time.monotonic() + 5
        while await raw.exists(f"{prefix}run:{{run-1}}") and time.monotonic() < deadline:
            time.sleep(0.05)

        # Redis expired the keys: reads skip what is left in the indexes
        assert await store.load("run-1") is None
        assert (await store.list_runs(RunQuery())).runs == []
        assert await raw.zcard(f"{prefix}ix:all") == 1

        # and the next create cleans it out
        await store.create(make_run("run-2", created_at=T0 + 1))
        assert await raw.zrange(f"{prefix}ix:all", 0, -1) == [
            f"{created_key(T0 + 1)}:run-2".encode()
        ]
        assert await raw.zscore(f"{prefix}due", "run-1") is None
        assert await raw.zcard(f"{prefix}ix:tag:t") == 0
    finally:
        await store.close()


# -- listing works in pages whatever the filters -------------------------------------------------


async def test_a_sparse_filter_pages_within_its_work_bound(store: RedisStore) -> None:
    # given 1,500 runs of which only the oldest matches a filter the index cannot answer
    for i in range(1500):
        await store.create(
            make_run(f"run-{i:04}", status="completed" if i else "failed", created_at=T0 + i)
        )

    # when listing by workflow and status (the workflow index drives, status is filtered)
    query = RunQuery(workflow="order", status="failed", limit=10)
    first = await store.list_runs(query)

    # then the first page stops at its bound with a cursor, and the next one finds the run
    assert first.runs == [] and first.next_cursor is not None
    second = await store.list_runs(replace(query, cursor=first.next_cursor))
    assert [r.id for r in second.runs] == ["run-0000"] and second.next_cursor is None


async def test_append_consumes_in_the_same_script(store: RedisStore) -> None:
    await store.create(make_run(status="waiting"))
    await store.signal("run-1", Signal(id="s", name="go", payload=1, at=T0))
    sent()

    await store.append("run-1", Checkpoint(seq=0, kind="signal", name="go", value=1), consumes="s")

    assert sent() == ["EVALSHA"]
    assert (await store.load("run-1")).signals == []  # type: ignore[union-attr]
