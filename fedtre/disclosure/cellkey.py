"""The cell-key method: consistent, bounded, zero-mean noise on every released count.

The method ONS used for Census 2021 and ABS uses in TableBuilder:

- every record has a fixed record key in 0..255 (record_key_expression: a keyed hash of
  the dataset's key column, or of its declared values, computed by the data engine);
- a cell's key is the sum of its records' keys mod 256 (cell_key_sum: one aggregate in
  the same query that counts the cell); a margin's key is the sum of its cells' keys
  mod 256, so it is the key its records would give;
- a perturbation table (PTable) maps (count, cell key) to the noise added.

The same records always give the same cell key, so asking again gives the same answer
(repeats cannot be averaged), while two cells that differ by one record have unrelated
keys, so their difference carries noise.

fedtre's default table (PTable.maximum_entropy) is built from two stated parameters, as
statistical offices build theirs: a maximum deviation D and a variance V. For a count
n >= threshold + D the noise is symmetric on -D..D with variance V (the maximum-entropy
distribution with that variance, p(j) proportional to exp(-lambda j^2)), so its mean is
exactly zero. Nearer the threshold the support narrows to -(n - threshold)..(n -
threshold), so no count at or above the threshold is ever released below it. A count
below the threshold, or a true zero, is never released at all (the release stage
withholds it before the table is read). Probabilities are multiples of 1/256, one per
cell key, as in ONS's tables.

A TRE may instead supply its own table in ONS's CSV format (columns pcv, ckey, pvalue;
PTable.from_csv); counts above its largest pcv reuse its top 250 rows as ONS's code does.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import visitors
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

from fedtre.errors import InvalidRequest

if TYPE_CHECKING:
    from fedtre.analyses.base import DataSource

KEY_RANGE = 256
# Record ids for the differencing memory are below this prime (2^31 - 1), so sums of ids
# over ten million records and products with 31-bit constants fit in 64-bit integers.
ID_PRIME = 2_147_483_647
# ONS's code reuses rows 501..750 of its table for every count above 750.
_ONS_REUSED_ROWS = 250
_SEPARATOR = "\x1f"
SQLITE_FUNCTION = "fedtre_record_hash"


# -- perturbation tables --------------------------------------------------------------


@dataclass(frozen=True)
class PTable:
    """Noise by (count, cell key): rows[i][k] is the noise for count first_count + i.

    Counts above the last row reuse the last `reuse` rows cyclically (ONS's rule); with
    reuse = 1 every larger count uses the last row.
    """

    rows: tuple[tuple[int, ...], ...]
    first_count: int = 1
    reuse: int = 1
    description: str = ""

    def noise(self, n: int, cell_key: int) -> int:
        """Return the noise the table adds to a count n (>= 1) with the given cell key."""
        if n <= 0:
            return 0
        last = self.first_count + len(self.rows) - 1
        if n > last:
            n = (n - 1 - (last - self.reuse)) % self.reuse + (last - self.reuse) + 1
        if n < self.first_count:
            return 0
        return self.rows[n - self.first_count][cell_key % KEY_RANGE]

    def row(self, n: int) -> np.ndarray:
        """Return the 256 noise values of count n, one per cell key."""
        return np.array([self.noise(n, k) for k in range(KEY_RANGE)])

    @classmethod
    def maximum_entropy(cls, *, threshold: int, deviation: int, variance: float) -> PTable:
        """Return the default table: zero-mean noise within +-deviation, variance `variance`.

        Rows run from the threshold (at least 1) to threshold + deviation, the first row
        whose support is not narrowed by the threshold; every larger count uses that row.
        """
        if deviation < 0:
            raise InvalidRequest("policy noise_deviation must be 0 or more, e.g. 3")
        if not (0 <= variance <= deviation * (deviation + 1) / 3 + 1e-9):
            raise InvalidRequest(
                "policy noise_variance must be between 0 and D(D+1)/3 (the variance of the "
                f"uniform noise on -D..D), with D = noise_deviation = {deviation}"
            )
        first = max(threshold, 1)
        rows = tuple(
            _symmetric_row(min(deviation, n - first), variance)
            for n in range(first, first + deviation + 1)
        )
        return cls(
            rows,
            first_count=first,
            reuse=1,
            description=f"maximum entropy, D = {deviation}, V = {variance:g}",
        )

    @classmethod
    def from_csv(cls, path: Path) -> PTable:
        """Read a table in ONS's CSV format (pcv, ckey, pvalue; pcv from 1, ckey 0..255)."""
        try:
            with open(path, newline="") as handle:
                entries = [
                    (int(r["pcv"]), int(r["ckey"]), int(r["pvalue"]))
                    for r in csv.DictReader(handle)
                ]
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise InvalidRequest(
                f"cannot read the perturbation table {path} ({type(exc).__name__}); it must be "
                "a CSV with columns pcv, ckey, pvalue (integers), as ONS's ptable files are"
            ) from exc
        return cls.from_entries(entries, description=f"from {path.name}")

    @classmethod
    def from_entries(
        cls, entries: Iterable[tuple[int, int, int]], *, description: str = ""
    ) -> PTable:
        """Build a table from (pcv, ckey, pvalue) entries covering pcv 1..N, ckey 0..255."""
        grid: dict[int, dict[int, int]] = {}
        for pcv, ckey, pvalue in entries:
            grid.setdefault(pcv, {})[ckey] = pvalue
        top = max(grid, default=0)
        complete = top > 0 and all(
            set(grid.get(n, {})) == set(range(KEY_RANGE)) for n in range(1, top + 1)
        )
        if not complete:
            raise InvalidRequest(
                "a perturbation table must give pvalue for every pcv from 1 to its largest and "
                f"every ckey from 0 to {KEY_RANGE - 1}"
            )
        rows = tuple(tuple(grid[n][k] for k in range(KEY_RANGE)) for n in range(1, top + 1))
        return cls(rows, 1, min(_ONS_REUSED_ROWS, top), description)


def _symmetric_row(support: int, variance: float) -> tuple[int, ...]:
    """Return 256 noise values on -support..support: symmetric (mean exactly 0), variance
    as close to `variance` as multiples of 1/256 allow (smaller when the support is narrow)."""
    if support == 0 or variance == 0:
        return (0,) * KEY_RANGE
    js = np.arange(-support, support + 1)
    uniform_var = support * (support + 1) / 3
    target = min(variance, uniform_var)

    def var_at(lam: float) -> float:
        w = np.exp(-lam * js.astype(float) ** 2)
        p = w / w.sum()
        return float((p * js**2).sum())

    if target >= uniform_var - 1e-12:
        lam = 0.0
    else:
        lo, hi = 0.0, 50.0
        for _ in range(200):  # var_at falls as lam grows: bisect
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if var_at(mid) > target else (lo, mid)
        lam = (lo + hi) / 2
    weights = np.exp(-lam * js.astype(float) ** 2)
    p = weights / weights.sum()
    counts = _quantise_symmetric(p, support)
    values: list[int] = []
    # Lay the noise values out in order of j; which key gets which value does not matter,
    # keys are uniform.
    for j, c in zip(js.tolist(), counts, strict=True):
        values += [j] * c
    assert len(values) == KEY_RANGE
    return tuple(values)


def _quantise_symmetric(p: np.ndarray, support: int) -> list[int]:
    """Return counts out of 256 for each j, symmetric in j, summing to 256, closest to p."""
    # j = 0 takes an even count; each j > 0 takes the same count on both sides.
    positive = p[support + 1 :] * KEY_RANGE
    base = np.floor(positive).astype(int)
    centre = KEY_RANGE - 2 * int(base.sum())
    # Hand out pairs of units to the largest remainders while the centre keeps its share.
    remainders = positive - base
    centre_share = p[support] * KEY_RANGE
    for i in np.argsort(-remainders):
        if centre - 2 >= centre_share - 1 and remainders[i] > 0.5:
            base[i] += 1
            centre -= 2
    if centre % 2:  # cannot happen (256 - 2k is even) but keep the invariant visible
        raise AssertionError("odd centre")
    counts = [*base[::-1].tolist(), centre, *base.tolist()]
    assert sum(counts) == KEY_RANGE and centre >= 0
    return counts


def table_moments(table: PTable, n: int) -> tuple[float, float, int]:
    """Return the mean, variance and largest absolute noise of count n over its cell keys."""
    row = table.row(n).astype(float)
    return float(row.mean()), float(row.var()), int(np.abs(row).max())


# -- record keys, computed by the data engine -----------------------------------------


class _RecordHash(FunctionElement[int]):
    """A hash of `text` keyed by the TRE's secret, in 0..modulus-1, computed by the engine.

    Every engine computes the same function: the first 60 bits of MD5(seed ':' text) mod
    modulus, so the same records give the same keys whatever engine holds them (text is
    normalised per declared type by _record_text). MD5 serves here as a keyed mixing
    function for noise and sketches, not as a signature.
    """

    type = sa.BigInteger()
    inherit_cache = False
    name = "fedtre_record_hash"

    def __init__(self, text: ColumnElement[Any], seed: int, modulus: int) -> None:
        super().__init__(text)
        self.seed = seed
        self.modulus = modulus


@compiles(_RecordHash)
def _record_hash_default(element: _RecordHash, compiler: Any, **kw: Any) -> str:
    raise InvalidRequest(
        f"the cell-key method has no record hash for the {compiler.dialect.name!r} engine; "
        "fedtre supports SQLite, DuckDB, PostgreSQL and Spark SQL"
    )


def _salted(element: _RecordHash, compiler: Any, **kw: Any) -> str:
    return f"('{element.seed:x}:' || {compiler.process(element.clauses, **kw)})"


@compiles(_RecordHash, "sqlite")
def _record_hash_sqlite(element: _RecordHash, compiler: Any, **kw: Any) -> str:
    # SQLite has no MD5: a deterministic function the agent registers on each connection
    # (install_sqlite_function) computes the same value inside SQLite's aggregate loop.
    return f"{SQLITE_FUNCTION}({_salted(element, compiler, **kw)}, {element.modulus})"


@compiles(_RecordHash, "duckdb")
def _record_hash_duckdb(element: _RecordHash, compiler: Any, **kw: Any) -> str:
    digest = f"md5({_salted(element, compiler, **kw)})"
    return f"(CAST('0x' || substr({digest}, 1, 15) AS BIGINT) % {element.modulus})"


@compiles(_RecordHash, "postgresql")
def _record_hash_postgresql(element: _RecordHash, compiler: Any, **kw: Any) -> str:
    digest = f"md5({_salted(element, compiler, **kw)})"
    # MOD rather than %, which psycopg's format paramstyle would read as a placeholder.
    return (
        f"MOD(CAST(CAST('x' || substr({digest}, 1, 15) AS bit(60)) AS BIGINT), {element.modulus})"
    )


@compiles(_RecordHash, "spark")
def _record_hash_spark(element: _RecordHash, compiler: Any, **kw: Any) -> str:
    digest = f"md5({_salted(element, compiler, **kw)})"
    # conv() reads the 15 hex digits (60 bits, within BIGINT) as a decimal string.
    return f"pmod(CAST(conv(substr({digest}, 1, 15), 16, 10) AS BIGINT), {element.modulus})"


def _md5_hash(salted_text: str, modulus: int) -> int:
    return int(hashlib.md5(salted_text.encode()).hexdigest()[:15], 16) % modulus


def _seed(secret: bytes, purpose: str) -> int:
    """A 62-bit number derived from the secret for one purpose (it appears in SQL text)."""
    digest = hmac.new(secret, f"fedtre record hash:{purpose}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") >> 2


def _as_text(column: ColumnElement[Any], declared: str | None) -> ColumnElement[Any]:
    """The column's value as text every engine writes alike (per declared type)."""
    if declared == "boolean":
        return sa.case((column.is_(None), None), (column, "1"), else_="0")
    if declared == "float":
        # Six decimals, as a whole number: engines format floats differently.
        return sa.cast(sa.cast(sa.func.round(column * 1_000_000), sa.BigInteger), sa.String)
    return sa.cast(column, sa.String)


def _record_text(
    table: sa.FromClause, columns: Sequence[str], types: Mapping[str, str]
) -> ColumnElement[Any]:
    parts: list[ColumnElement[Any]] = []
    for name in columns:
        # A key column is not declared (not in table.c), but belongs to the same table.
        column = table.c[name] if name in table.c else sa.column(name, _selectable=table)
        text = _as_text(column, types.get(name))
        parts.append(sa.func.coalesce(text, _SEPARATOR + "null"))
    joined: ColumnElement[Any] = parts[0]
    for part in parts[1:]:
        joined = joined + sa.literal_column(f"'{_SEPARATOR}'", sa.String) + part
    return joined


def record_key_expression(
    table: sa.FromClause,
    columns: Sequence[str],
    secret: bytes,
    types: Mapping[str, str] | None = None,
) -> ColumnElement[int]:
    """Return the SQL expression of each record's key (0..255) over `columns` of table.

    columns: the dataset's key column, or every declared column when it has none (types:
    their declared types). The key is a hash of their text, keyed by the TRE's secret, so
    no one without the secret can compute a record's key.
    """
    text = _record_text(table, columns, types or {})
    return _RecordHash(text, _seed(secret, "key"), KEY_RANGE)


def record_id_expression(
    table: sa.FromClause,
    columns: Sequence[str],
    secret: bytes,
    types: Mapping[str, str] | None = None,
) -> ColumnElement[int]:
    """Return each record's id for the differencing memory: 1..ID_PRIME-1, keyed like the key."""
    text = _record_text(table, columns, types or {})
    return _RecordHash(text, _seed(secret, "id"), ID_PRIME - 1) + 1


def computes_hash(expression: ColumnElement[Any]) -> bool:
    """Whether the expression hashes records (costly per record) rather than reading a
    stored key or id."""
    return any(isinstance(e, _RecordHash) for e in visitors.iterate(expression))


def install_sqlite_function(engine: sa.Engine) -> None:
    """Register the record hash on every SQLite connection of engine (no-op elsewhere)."""
    if engine.dialect.name != "sqlite":
        return

    # On every checkout, so connections pooled before this call have it too (in-memory
    # databases live in one pooled connection); registering again replaces it.
    @sa.event.listens_for(engine, "checkout")
    def _register(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        dbapi_connection.create_function(SQLITE_FUNCTION, 2, _md5_hash, deterministic=True)


def cell_key_sum(record_key: ColumnElement[int]) -> ColumnElement[int]:
    """Return the aggregate giving a group's cell key: SUM(record key) mod 256 (0 if empty)."""
    return sa.func.coalesce(sa.func.sum(record_key), 0) % KEY_RANGE


def combine_keys(keys: Iterable[int]) -> int:
    """Return the cell key of the union of disjoint cells: their keys' sum mod 256."""
    return sum(int(k) for k in keys) % KEY_RANGE


# -- magnitudes -------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def unit_noise(secret_tag: bytes, cell_key: int, slot: str) -> float:
    """Return a number in [-1, 1) fixed by (secret, cell key, slot): a magnitude's noise factor.

    Derived by a keyed hash, so the values are unknown to anyone without the TRE's secret
    and carry no arithmetic structure (a released mean times a candidate n is not whole).
    """
    digest = hmac.new(secret_tag, f"{cell_key}:{slot}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / 2**63 - 1.0


def secret_tag(secret: bytes) -> bytes:
    """Return the key used for magnitude noise, derived from (never equal to) the secret."""
    return hmac.new(secret, b"fedtre magnitude noise", hashlib.sha256).digest()


def keyed_source(source: DataSource, secret: bytes, key: str | None) -> DataSource:
    """Return source with its record keys: from its key column, else its declared values.

    Keys from a key column follow a person through every change of their other values;
    keys from declared values are shared by records with identical declared values (who
    are in or out of every cohort together anyway) and change when a value is corrected.
    """
    columns = [key] if key else list(source.schema.columns)
    types = dict(source.schema.columns)
    install_sqlite_function(source.engine)
    return replace(
        source,
        record_key=record_key_expression(source.table, columns, secret, types),
        record_id=record_id_expression(source.table, columns, secret, types),
    )


_UNKEYED: dict[int, DataSource] = {}


def _keyed(source: DataSource) -> DataSource:
    """Return source keyed; a source the agent did not key (a test's) gets keys from its
    declared values under a public secret."""
    if source.record_key is not None:
        return source
    keyed = _UNKEYED.get(id(source.engine))
    if keyed is None or keyed.table is not source.table:
        from fedtre.disclosure.policy import UNKEYED

        keyed = keyed_source(source, UNKEYED, None)
        _UNKEYED[id(source.engine)] = keyed
    return keyed


def record_key_of(source: DataSource) -> ColumnElement[int]:
    """Return source's record-key expression (0..255 per record)."""
    key = _keyed(source).record_key
    assert key is not None
    return key


def record_id_of(source: DataSource) -> ColumnElement[int]:
    """Return source's record-id expression (1..ID_PRIME-1 per record)."""
    rid = _keyed(source).record_id
    assert rid is not None
    return rid
