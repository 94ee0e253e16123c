"""Scoped statements on the raw driver: the request path's data access without the ORM.

A repository's lone statement (one SELECT, or one INSERT/UPDATE/DELETE with no transaction
open: kit/tenancy.py) is a Core statement built once at import. Here it is compiled once per
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

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        values: list[Any] = []
        for name, bind in zip(self.names, self.binders, strict=True):
            if name in params:
                value = params[name]
            elif name in self.defaults:
                value = self.defaults[name]()
            else:
                raise sa_exc.ArgumentError(f"a value is required for bind parameter {name!r}")
            values.append(bind(value) if bind is not None and value is not None else value)
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
    binders = tuple(
        compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
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
    return _Plan(statement, sql, names, binders, defaults, row, readers)


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
    return exc  # OSError, TimeoutError: already recognised as an outage (kit/errors.py)


class PostgresDirect:
    """Lone statements on an asyncpg pool of its own, in autocommit: one round trip each.

    The pool opens connections as load first needs them (none at start, so a process starts
    while the database is down), keeps them (no idle timeout) and sends no TLS request on
    loopback, so steady load never opens a connection.
    """

    def __init__(self, pool: asyncpg.Pool, dialect: Dialect, fallback: LoneWriter) -> None:
        self._pool = pool
        self._dialect = dialect
        self._fallback = fallback
        self._plans: OrderedDict[tuple[int, frozenset[str] | None], _Plan | None] = OrderedDict()

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
        serializer = getattr(dialect, "_json_serializer", None) or json.dumps
        deserializer = getattr(dialect, "_json_deserializer", None) or json.loads

        async def setup(conn: asyncpg.Connection) -> None:
            for name in ("json", "jsonb"):
                await conn.set_type_codec(
                    name, encoder=serializer, decoder=deserializer, schema="pg_catalog"
                )

        args = dict(connect_args)
        timeout = args.pop("timeout", settings.db_pool_timeout)
        pool = await asyncpg.create_pool(
            dsn,
            min_size=0,
            max_size=settings.db_pool_size,
            max_inactive_connection_lifetime=0,
            init=setup,
            timeout=timeout,
            **args,
        )
        return cls(pool, dialect, fallback)

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

    async def _run(self, plan: _Plan, params: Mapping[str, Any], fetch: bool) -> Any:
        """The plan on a pooled connection: its rows, or asyncpg's command tag."""
        arguments = plan.arguments(params)
        try:
            async with self._pool.acquire() as conn:
                if fetch:
                    return await conn.fetch(plan.sql, *arguments)
                return await conn.execute(plan.sql, *arguments)
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
