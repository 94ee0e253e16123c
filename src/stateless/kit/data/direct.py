"""Scoped statements on the raw driver: the request path's data access without the ORM.

A repository's lone statement (one SELECT, or one INSERT/UPDATE/DELETE with no transaction
open: kit/data/tenancy.py) is a Core statement built once at import. Here it is compiled once per
dialect (and, for an INSERT, per set of supplied columns) into the driver's own SQL text, the
order of its parameters and their type conversions; each run then binds the values and calls
asyncpg directly on a pooled connection in autocommit. That skips SQLAlchemy's execution
context, result wrapping and greenlet hops, which cost more CPU than the statement itself on a
busy request path (docs/performance.md). Tenant scoping is untouched: it lives in the statement
and its parameters, which only the repository fills in.

What the direct path cannot run the same way (an expanding IN list, a database-side sequence
default) falls back to SQLAlchemy, so behaviour never depends on which path ran. Driver errors
are raised as the SQLAlchemy exception classes the rest of the app already maps to problems
(409 on an integrity error, 422 on unstorable text, 503 when the database is unreachable),
without the parameters, which may hold sealed user data.

Every wait is bounded (docs/faults.md): a request waits at most DB_POOL_TIMEOUT for a pooled
connection (then 503 `database_unavailable`), a statement at most DB_STATEMENT_TIMEOUT_SECONDS
(asyncpg's command timeout), a new connection at most DB_POOL_TIMEOUT. A connection found dead
(the server restarted, or its backend was terminated) is replaced, with every other pooled
connection of its age, and a SELECT that met it runs once more on a fresh one; a write is never
run twice, since it may have been applied before the link went.
"""

from __future__ import annotations

import json
from collections import OrderedDict, namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
from sqlalchemy import Executable, Insert
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect, make_url

from stateless.config import Settings


class LoneWriter(Protocol):
    """Runs one statement that no open transaction waits for, on its own connection, without
    holding any connection afterwards: a write (returns its rowcount) or a read (its rows)."""

    async def __call__(self, statement: Executable, params: Mapping[str, Any]) -> int: ...

    async def rows(self, statement: Executable, params: Mapping[str, Any]) -> Sequence[Any]: ...


# The application_name of the direct pool's sessions (unless DATABASE_URL names one).
DIRECT_APPLICATION_NAME = "stateless-direct"
# SQLSTATEs after which the server has closed the connection: the connection exception class
# (08: the link is gone) and admin or crash shutdown (pg_terminate_backend, a restart).
_DEAD_SQLSTATES = ("08", "57P01", "57P02")


def _closed(conn: Any) -> bool:
    """Whether a pooled connection is closed; one whose close already handed it back to the
    pool (asyncpg then refuses every call on it) is."""
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:
        return True


def _connection_died(exc: BaseException, conn: Any) -> bool:
    """True when `exc` says the connection itself is gone, not that the statement failed. A
    statement timeout is not that: asyncpg cancels the statement and keeps the connection."""
    if isinstance(exc, TimeoutError):
        return False
    # InternalClientError: the protocol is in a state it cannot leave (seen when a statement
    # starts while the server's FATAL for a terminated backend is being read): the connection
    # cannot be trusted with another statement
    dead = (asyncpg.ConnectionDoesNotExistError, asyncpg.InternalClientError, ConnectionError)
    if isinstance(exc, dead):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate.startswith(_DEAD_SQLSTATES):
        return True
    return _closed(conn)


class _ConnectionDied(Exception):
    """The connection died under a statement; `cause` is what the driver raised."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _json_text(value: str) -> str:
    """The json/jsonb codec's encoder. The bind processor of SQLAlchemy's JSON type (the plan's
    binder) has already serialized the value, so its text goes to the server as it is: encoded
    once, as SQLAlchemy's own asyncpg dialect does."""
    return value


# Compiled plans kept per process: statements are module constants, so this bounds only a
# misuse (a statement built per call), never the normal set.
_MAX_PLANS = 512


def _mapping(self: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(self._fields, self, strict=True))  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class _Plan:
    statement: Executable  # held so its id() is never reused while the plan lives
    sql: str
    names: tuple[str, ...]
    binders: tuple[Callable[[Any], Any] | None, ...]
    defaults: Mapping[str, Callable[[], Any]]
    row: type | None  # the row class of a statement that returns rows
    readers: tuple[Callable[[Any], Any] | None, ...]
    # A plain SELECT: running it twice changes nothing, so it may run again when its
    # connection died under it
    retry_safe: bool = False
    # Parameters whose type converts None too (JSON stores None as JSON null, as SQLAlchemy does)
    evaluate_none: frozenset[str] = frozenset()

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        values: list[Any] = []
        for name, bind in zip(self.names, self.binders, strict=True):
            if name in params:
                value = params[name]
            elif name in self.defaults:
                value = self.defaults[name]()
            else:
                raise sa_exc.ArgumentError(f"a value is required for bind parameter {name!r}")
            if bind is not None and (value is not None or name in self.evaluate_none):
                value = bind(value)
            values.append(value)
        return values

    def rows(self, records: Sequence[Any]) -> list[Any]:
        assert self.row is not None
        readers = self.readers
        if not any(readers):
            return [self.row(*record) for record in records]
        return [
            self.row(
                *(
                    read(v) if read is not None and v is not None else v
                    for read, v in zip(readers, record, strict=True)
                )
            )
            for record in records
        ]


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value


def _default_of(column: Any) -> Callable[[], Any] | None:
    """A Python-side column default as a zero-argument callable (None: not one we can run)."""
    default = column.default
    if default is None:
        return lambda: None
    if getattr(default, "is_scalar", False):
        return _constant(default.arg)
    if getattr(default, "is_callable", False):
        function = default.arg
        return lambda: function(None)
    return None


def compile_plan(statement: Executable, dialect: Dialect, keys: Sequence[str]) -> _Plan | None:
    """The driver SQL and parameter order of `statement`, or None when it must run through
    SQLAlchemy (expanding parameters, non-Python defaults)."""
    is_insert = isinstance(statement, Insert)
    clause: Any = statement
    compiled: Any = clause.compile(dialect=dialect, column_keys=sorted(keys) if is_insert else None)
    names = tuple(compiled.positiontup or ())
    sql = str(compiled.string)
    if "POSTCOMPILE" in sql or any(compiled.binds[name].expanding for name in names):
        return None
    defaults: dict[str, Callable[[], Any]] = {}
    for column in getattr(compiled, "insert_prefetch", ()) or ():
        make = _default_of(column)
        if make is None:
            return None
        defaults[column.key] = make
    for name in names:
        bind = compiled.binds[name]
        if name not in defaults and not bind.required:
            defaults[name] = _constant(bind.effective_value)
    types = [compiled.binds[name].type.dialect_impl(dialect) for name in names]
    binders = tuple(kind.bind_processor(dialect) for kind in types)
    evaluate_none = frozenset(
        name for name, kind in zip(names, types, strict=True) if kind.should_evaluate_none
    )
    row: type | None = None
    readers: tuple[Callable[[Any], Any] | None, ...] = ()
    if getattr(compiled, "effective_returning", None):
        return None  # RETURNING: rare off the hot path; SQLAlchemy shapes its rows
    if getattr(clause, "is_select", False):
        columns = list(getattr(statement, "selected_columns", ()))
        if not columns:
            return None
        keys_out = [str(column.key) for column in columns]
        base: Any = namedtuple("DirectRow", tuple(keys_out), rename=True)  # type: ignore[misc]
        row = type("DirectRow", (base,), {"__slots__": (), "_mapping": property(_mapping)})
        readers = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        )
    return _Plan(
        statement, sql, names, binders, defaults, row, readers, row is not None, evaluate_none
    )


def _rowcount(status: str) -> int:
    """asyncpg's command tag (`INSERT 0 1`, `UPDATE 3`, `DELETE 0`): its last number."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _translated(exc: BaseException, sql: str) -> BaseException:
    """The SQLAlchemy exception the app's problem handlers expect, without parameters."""
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return sa_exc.IntegrityError(sql, None, exc)
    if isinstance(exc, asyncpg.DataError) or (
        isinstance(exc, asyncpg.PostgresError)
        and str(getattr(exc, "sqlstate", "")).startswith("22")
    ):
        return sa_exc.DataError(sql, None, exc)
    if isinstance(exc, (asyncpg.InterfaceError, asyncpg.PostgresConnectionError)):
        return sa_exc.OperationalError(sql, None, exc)
    if isinstance(exc, asyncpg.PostgresError):
        return sa_exc.DBAPIError(sql, None, exc)
    return exc  # OSError, TimeoutError: already recognised as an outage (kit/web/errors.py)


class PostgresDirect:
    """Lone statements on an asyncpg pool of its own, in autocommit: one round trip each.

    The pool opens connections as load first needs them (none at start, so a process starts
    while the database is down), keeps them (no idle timeout) and sends no TLS request on
    loopback, so steady load never opens a connection.

    Waiting for a connection is bounded by `acquire_timeout_seconds` (DB_POOL_TIMEOUT), and the
    bound costs nothing while a connection is free: requests holding or waiting for one are
    counted, and only a request that finds all `max_size` taken waits under asyncpg's timeout
    (which runs the wait as a task of its own).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        dialect: Dialect,
        fallback: LoneWriter,
        *,
        acquire_timeout_seconds: float = 5.0,
    ) -> None:
        self._pool = pool
        self._dialect = dialect
        self._fallback = fallback
        self._plans: OrderedDict[tuple[int, frozenset[str] | None], _Plan | None] = OrderedDict()
        self._acquire_timeout = acquire_timeout_seconds
        self._max_size = pool.get_max_size()
        self._in_use = 0  # requests holding a connection or waiting for one
        # Whole-pool expiries so far: a connection taken after the latest one is of the pool's
        # current generation (asyncpg replaced any older one on acquire)
        self._expiries = 0
        self.dead_connections = 0  # connections found dead under a statement (and replaced)
        self.retried_reads = 0  # SELECTs run again on a fresh connection after that

    @classmethod
    async def open(
        cls,
        settings: Settings,
        dialect: Dialect,
        fallback: LoneWriter,
        connect_args: dict[str, Any],
    ) -> PostgresDirect:
        url = make_url(settings.database_url).set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        deserializer = getattr(dialect, "_json_deserializer", None) or json.loads

        async def setup(conn: asyncpg.Connection) -> None:
            for name in ("json", "jsonb"):
                await conn.set_type_codec(
                    name, encoder=_json_text, decoder=deserializer, schema="pg_catalog"
                )

        args = dict(connect_args)
        timeout = args.pop("timeout", settings.db_pool_timeout)
        if "application_name" not in url.query:
            # Tells this pool's sessions apart in pg_stat_activity (the outage tests terminate
            # exactly those)
            args["server_settings"] = {
                "application_name": DIRECT_APPLICATION_NAME,
                **args.get("server_settings", {}),
            }
        pool = await asyncpg.create_pool(
            dsn,
            min_size=0,
            max_size=settings.db_pool_size,
            max_inactive_connection_lifetime=0,
            init=setup,
            timeout=timeout,
            **args,
        )
        return cls(pool, dialect, fallback, acquire_timeout_seconds=settings.db_pool_timeout)

    async def close(self) -> None:
        await self._pool.close()

    def _plan(self, statement: Executable, params: Mapping[str, Any]) -> _Plan | None:
        keys = frozenset(params) if isinstance(statement, Insert) else None
        key = (id(statement), keys)
        try:
            plan = self._plans[key]
        except KeyError:
            plan = compile_plan(statement, self._dialect, sorted(keys or ()))
            if len(self._plans) >= _MAX_PLANS:
                self._plans.popitem(last=False)
            self._plans[key] = plan
        if plan is not None and plan.statement is not statement:  # id() reused: recompile
            del self._plans[key]
            return self._plan(statement, params)
        return plan

    async def _acquire(self) -> Any:
        """A pooled connection, waiting at most the acquire timeout when none is free.

        While fewer than `max_size` requests hold or wait for a connection, a free holder is in
        the pool's queue and asyncpg hands it over at once (opening its connection, if it must,
        within the connect timeout), so no timer is armed on that path.
        """
        self._in_use += 1
        try:
            if self._in_use <= self._max_size:
                return await self._pool.acquire()
            try:
                return await self._pool.acquire(timeout=self._acquire_timeout)
            except TimeoutError as exc:
                raise sa_exc.TimeoutError(
                    f"no database connection free within {self._acquire_timeout:g} s "
                    f"(DB_POOL_TIMEOUT); all {self._max_size} in use"
                ) from exc
        except BaseException:
            self._in_use -= 1
            raise

    async def _release(self, conn: Any) -> None:
        try:
            await self._pool.release(conn)
        finally:
            self._in_use -= 1

    async def _forget(self, conn: Any, expiries: int) -> None:
        """`conn` died: close it (its holder reconnects on next use) and, when it was taken
        after the latest expiry, expire every pooled connection, which the same restart most
        likely killed too (each is replaced on its next acquire, or on release when in use).
        The others a restart killed were taken before that expiry: they are not expired again,
        so their failures do not drop the fresh connections opened since."""
        self.dead_connections += 1
        if not _closed(conn):
            conn.terminate()
        if expiries == self._expiries:
            self._expiries += 1
            await self._pool.expire_connections()

    async def _once(self, sql: str, arguments: list[Any], fetch: bool) -> Any:
        """One run on one connection; `_ConnectionDied` when the connection died under it."""
        conn = await self._acquire()
        expiries = self._expiries
        try:
            if fetch:
                return await conn.fetch(sql, *arguments)
            return await conn.execute(sql, *arguments)
        except Exception as exc:
            if not _connection_died(exc, conn):
                raise
            await self._forget(conn, expiries)
            raise _ConnectionDied(exc) from exc
        finally:
            await self._release(conn)

    async def _run(self, plan: _Plan, params: Mapping[str, Any], fetch: bool) -> Any:
        """The plan on a pooled connection: its rows, or asyncpg's command tag."""
        arguments = plan.arguments(params)
        try:
            try:
                return await self._once(plan.sql, arguments, fetch)
            except _ConnectionDied:
                if not plan.retry_safe:  # a write may have been applied: never run it twice
                    raise
            self.retried_reads += 1
            return await self._once(plan.sql, arguments, fetch)
        except _ConnectionDied as died:
            raise sa_exc.OperationalError(
                plan.sql, None, died.cause, connection_invalidated=True
            ) from died.cause
        except Exception as exc:
            translated = _translated(exc, plan.sql)
            if translated is exc:
                raise
            raise translated from exc

    async def __call__(self, statement: Executable, params: Mapping[str, Any]) -> int:
        plan = self._plan(statement, params)
        if plan is None:
            return await self._fallback(statement, params)
        return _rowcount(await self._run(plan, params, fetch=False))

    async def rows(self, statement: Executable, params: Mapping[str, Any]) -> Sequence[Any]:
        plan = self._plan(statement, params)
        if plan is None or plan.row is None:
            return await self._fallback.rows(statement, params)
        return plan.rows(await self._run(plan, params, fetch=True))
