"""Differencing protection: the cohort rules and the memory of record sets already described.

Two released figures about sets A and B that differ by a few records describe those few
records: count(age >= 40) - count(age >= 40 and id != 17) is person 17. So:

- cohort_size: a filtered output's cohort must hold at least `threshold` records and
  leave at least `threshold` of the analysis's records outside it (the complement
  attack: "everyone but these 3" against "everyone").
- differencing: the agent keeps, per dataset (across every project and researcher),
  each cohort it has measured, and each group an output releases separately (a level of
  `by`, a cell or margin of a table), whatever the output's outcome. A new cohort or
  group whose symmetric difference with any of them is between 1 and threshold - 1
  records is blocked. An identical one (0) is fine: asking the same question twice
  reveals nothing new (and the cell-key method gives the same answer).

A grouping is a tuple of columns (one group per combination of their levels) or of
binnings of a numeric column (Bins: width bins on an origin; Edges: fixed edges), whose
group label is the bin index the engine computes (as histogram.compute does); a released
bin is remembered under the question "filter and lower <= x < upper", so a bin is the
same question as the filter a researcher would write for its range. A union of adjacent
bins (an open outer bin) is remembered as the sum of their sketches (label "lo:hi",
Cohort.released_groups).

Refusing only near-identical sets would itself be an oracle: asked S and then "S without
the target", the agent would answer the second alike when the target is not in S (the
same records) and refuse it when they are. So each set is remembered with the question
that described it (its predicate: the researcher's filter, the analysis's narrowing to a
derived variable's non-missing values (question_of) and the group's levels, in a
canonical form), and the same records described by a *different* question are refused
too: then both answers are refusals. The same question again (the same predicate, or a
rewrite with the same canonical form) is answered, the same as before.

A set of records is remembered as a sketch the data engine computes: an invertible Bloom
lookup table (Goodrich and Mitzenmacher 2011; Eppstein et al., "What's the difference?",
2011) of the records' ids. Each record has an id (fedtre.disclosure.cellkey: a keyed hash
of the dataset's key column, or of its declared values, in 1..2^31-2) and falls in one
cell of each of PARTS parts; every cell holds the count of its records, the sum of their
ids and the sum of a check hash of their ids. One GROUP BY over the parts, in the engine
(a table's margins are the sums of its cells' sketches): no record reaches Python, and a
sketch is PARTS x CELLS x 3 integers whatever the set's size.

Subtracting two sketches leaves the sketch of their symmetric difference (as a signed
multiset); peeling its pure cells (count c, id sum c x id, check sum c x check(id))
lists it exactly when it is small. With 4 x 64 cells a difference of 9 records (the
largest the default threshold blocks) fails to peel when two of its records share a
cell in every part: about 36 x 64^-4 = 2 in a million (measured: 0 in 200,000,
bench/README.md); a difference that does not peel is treated as large, so such a rare
failure lets one pair through. A sketch is 4 x 64 x 3 integers (6 KB). Records
with identical ids (identical declared values, or a 2^-31 collision) count as one id
several times: a difference can only look smaller through a collision of two differing
records, with probability about 2^-31 a pair.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
import sqlalchemy as sa

from fedtre.analyses.base import DataSource, RuleResult
from fedtre.analyses.ctes import materialized
from fedtre.analyses.filters import compile_filter
from fedtre.analyses.labels import category_label
from fedtre.disclosure.cellkey import ID_PRIME, computes_hash, record_id_of
from fedtre.disclosure.policy import DisclosurePolicy
from fedtre.disclosure.rules import COHORT_SIZE, DIFFERENCING

PARTS = 4
CELLS = 64
# (multiplier, increment) of the integer hashes of an id: one per part, then the check.
# Public constants: the ids themselves are keyed by the TRE's secret.
_HASHES = (
    (1_103_515_245, 12_345),
    (1_664_525, 1_013_904_223),
    (2_147_483_629, 2_147_483_587),
    (1_234_567_891, 987_654_321),
    (1_597_334_677, 2_654_435_761 % 2_147_483_647),
)
SKETCH_VERSION = "iblt1"


@dataclass(frozen=True)
class Bins:
    """Bins [origin + k width, origin + (k + 1) width) of a numeric column, every integer
    k; a record's label is k = FLOOR((x - origin) / width), NULL when x is."""

    column: str
    origin: float
    width: float

    def edge(self, j: int) -> float:
        """Return edge j (bin j's lower bound), as histogram releases it."""
        return self.origin + j * self.width

    def index_sql(self, table: sa.FromClause) -> sa.ColumnElement[Any]:
        """Return each record's bin index as a SQL expression (NULL: no bin)."""
        value = sa.cast(table.c[self.column], sa.Double)
        index = sa.func.floor((value - self.origin) / self.width)
        # SQLAlchemy's SQLite FLOOR (a Python function) fails on NULL: never call it there.
        return sa.case((value.is_not(None), index), else_=None)

    def atoms(self, lo: int | None, hi: int | None) -> list[dict[str, Any]]:
        """Return the conditions selecting the bins lo..hi-1 (None: open at that end)."""
        atoms = []
        if lo is not None:
            atoms.append({"col": self.column, "op": ">=", "value": self.edge(lo)})
        if hi is not None:
            atoms.append({"col": self.column, "op": "<", "value": self.edge(hi)})
        return atoms or [{"col": self.column, "op": "not_null"}]


@dataclass(frozen=True)
class Edges:
    """Bins [e0, e1), ..., [e(k-1), ek] of a numeric column (the last closed, as
    numpy.histogram); bin i is [e_i, e_(i+1)); a record outside [e0, ek] is in none."""

    column: str
    edges: tuple[float, ...]

    def edge(self, j: int) -> float:
        """Return edge j (bin j's lower bound)."""
        return float(self.edges[j])

    def index_sql(self, table: sa.FromClause) -> sa.ColumnElement[Any]:
        """Return each record's bin index as a SQL expression (NULL: no bin)."""
        value = sa.cast(table.c[self.column], sa.Double)
        last = len(self.edges) - 2
        whens = [
            (sa.and_(value >= lo, value <= hi if i == last else value < hi), sa.literal(i))
            for i, (lo, hi) in enumerate(zip(self.edges, self.edges[1:], strict=False))
        ]
        return sa.case(*whens, else_=None)

    def atoms(self, lo: int | None, hi: int | None) -> list[dict[str, Any]]:
        """Return the conditions selecting the bins lo..hi-1 (None: to the first or last
        edge, which bound every bin)."""
        last = len(self.edges) - 1
        lo, hi = 0 if lo is None else lo, last if hi is None else hi
        if not 0 <= lo < hi <= last:
            raise ValueError(f"no bins {lo}..{hi - 1} among {last} edges' bins")
        return [
            {"col": self.column, "op": ">=", "value": self.edge(lo)},
            {"col": self.column, "op": "<=" if hi == last else "<", "value": self.edge(hi)},
        ]


Binning: TypeAlias = Bins | Edges
# A grouping names a column (one group per level) or a binning (one group per bin).
GroupingElement: TypeAlias = str | Bins | Edges
Grouping: TypeAlias = tuple[GroupingElement, ...]
Labels: TypeAlias = tuple[str | None, ...]


def span_label(lo: int | None, hi: int | None) -> str:
    """Return the label of the bins lo..hi-1 of a binning: "k" for bin k alone, "lo:hi"
    for a union of bins (either end empty: open), as Cohort.released_groups reads it."""
    if lo is not None and hi is not None and hi == lo + 1:
        return str(lo)
    return f"{'' if lo is None else lo}:{'' if hi is None else hi}"


def released_spans(
    binning: Bins | Edges, spans: Iterable[tuple[int | None, int | None]]
) -> set[tuple[Grouping, Labels]]:
    """Return the released groups of runs of bins lo..hi-1 (None: open at that end), as an
    analysis's released_groups gives them; a run open at both ends is the cohort itself,
    remembered already, so it is left out."""
    return {
        ((binning,), (span_label(lo, hi),)) for lo, hi in spans if not (lo is None and hi is None)
    }


def _span(label: str) -> tuple[int | None, int | None]:
    if ":" not in label:
        return int(label), int(label) + 1
    lo, hi = label.split(":")
    return (int(lo) if lo else None, int(hi) if hi else None)


@dataclass(frozen=True)
class DescribedSet:
    """A set of records an output describes: its size, sketch and the question's predicate;
    for a group, its grouping and its labels (fedtre.analyses.labels for a column's
    level, span_label for a binning's bins)."""

    size: int
    sketch: np.ndarray
    predicate: str
    grouping: Grouping = ()
    labels: Labels = ()


@dataclass(frozen=True)
class Cohort:
    """The records an output describes, as sketches; never leaves the agent.

    size: records in the cohort; universe: records the analysis describes without a
    filter; filtered: whether a filter narrowed it; scheme: how records were identified
    (sets compare only under the same scheme); sketch: the cohort's sketch; groups: the
    sizes and sketches of each group the output releases separately; question: the
    researcher's filter (for the predicates of unions of bins).
    """

    size: int
    universe: int
    filtered: bool
    scheme: str
    sketch: np.ndarray
    predicate: str = ""
    groups: tuple[DescribedSet, ...] = ()
    question: Mapping[str, Any] | None = field(default=None, compare=False)

    @property
    def whole(self) -> DescribedSet:
        """The cohort itself, as a set the memory compares."""
        return DescribedSet(self.size, self.sketch, self.predicate)

    def released_groups(self, released: Set[tuple[Grouping, Labels]]) -> list[DescribedSet]:
        """Return the groups whose (grouping, labels) the output released.

        A binning's label may name a union of its bins ("lo:hi", span_label): that set is
        the sum of the sketches of the bins in it (a sketch is linear in its records),
        remembered under "filter and the union's range"; an empty union is left out, as
        is a released group with no records (no sketch). A union in a grouping that also
        has a column is not supported (ValueError).
        """
        found = [g for g in self.groups if (g.grouping, g.labels) in released]
        measured = {(g.grouping, g.labels) for g in self.groups}
        for grouping, labels in sorted(released - measured, key=_sort_key):
            union = self._union(grouping, labels)
            if union is not None:
                found.append(union)
        return found

    def _union(self, grouping: Grouping, labels: Labels) -> DescribedSet | None:
        """The union of bins named by labels (a span per binning), or None when labels
        name no union; raises ValueError for a grouping with a column (not supported)."""
        if len(grouping) != len(labels) or not any(
            isinstance(e, Bins | Edges) and isinstance(v, str) and ":" in v
            for e, v in zip(grouping, labels, strict=True)
        ):
            return None  # not a union (e.g. a level, or a bin with no records)
        spans: list[tuple[int | None, int | None]] = []
        binnings: list[Binning] = []
        for element, label in zip(grouping, labels, strict=True):
            if not isinstance(element, Bins | Edges) or label is None:
                raise ValueError(f"a union of bins is remembered only over binnings: {grouping!r}")
            spans.append(_span(label))
            binnings.append(element)

        def inside(group: DescribedSet) -> bool:
            return all(
                got is not None and (lo is None or int(got) >= lo) and (hi is None or int(got) < hi)
                for got, (lo, hi) in zip(group.labels, spans, strict=True)
            )

        members = [g for g in self.groups if g.grouping == grouping and inside(g)]
        if not members:
            return None
        sketch = _empty()
        for g in members:
            sketch[:, :, 0] += g.sketch[:, :, 0]
            sketch[:, :, 1:] = (sketch[:, :, 1:] + g.sketch[:, :, 1:]) % ID_PRIME
        atoms = [a for b, span in zip(binnings, spans, strict=True) for a in b.atoms(*span)]
        predicate = canonical_predicate(self.question, atoms)
        return DescribedSet(sum(g.size for g in members), sketch, predicate, grouping, labels)

    @property
    def digest(self) -> str:
        """SHA-256 of the sketch: equal sets have equal digests."""
        return sketch_digest(self.sketch)


def sketch_digest(sketch: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(sketch, dtype=np.int64).tobytes()).hexdigest()


def identity_scheme(source: DataSource, key: str | None) -> str:
    """Return how records of `source` are identified: by key column or by declared values."""
    if key:
        return f"{SKETCH_VERSION}:key:{key}"
    columns = ",".join(f"{c}:{t}" for c, t in sorted(source.schema.columns.items()))
    return f"{SKETCH_VERSION}:values:" + hashlib.sha256(columns.encode()).hexdigest()[:16]


def _hash_sql(rid: Any, which: int) -> Any:
    a, b = _HASHES[which]
    rid = sa.cast(rid, sa.BigInteger)
    if which == PARTS:
        # The check is quadratic: a linear one would pass a mixed cell as pure (the sum of
        # a x id + b over n ids is n times its value at their mean id).
        rid = rid * rid % ID_PRIME
    return (rid * a + b) % ID_PRIME


def _hash_py(rid: int, which: int) -> int:
    a, b = _HASHES[which]
    if which == PARTS:
        rid = rid * rid % ID_PRIME
    return (rid * a + b) % ID_PRIME


def measure_cohort(
    source: DataSource,
    cohort_filter: Mapping[str, Any] | None,
    universe_filter: Mapping[str, Any] | None,
    *,
    key: str | None = None,
    filtered: bool,
    groupings: Sequence[Sequence[GroupingElement]] = (),
    question: Mapping[str, Any] | None = None,
) -> Cohort:
    """Sketch the cohort, and each group of every grouping, in the data engine.

    question: the predicate the cohort is remembered under (question_of: the researcher's
    filter; the analysis's own narrowing to a declared column's non-missing values, e.g. a
    summary's, is not part of it, to a derived variable's is).

    groupings: the column sets whose groups the output releases separately (e.g.
    [("smoking", "sex"), ("smoking",), ("sex",)] for a two-way table with margins); an
    element may be a binning (Bins, Edges) instead of a column: its groups are the
    non-empty bins, labelled span_label(k, k + 1), remembered under the question "filter
    and lower <= x < upper" (records in no bin are in no group).
    `key` is accepted for the scheme's name; the source's record ids already use it.
    """
    table = source.table
    rid = record_id_of(source)
    where = compile_filter(cohort_filter, table) if cohort_filter is not None else None
    count = sa.select(sa.func.count()).select_from(table)
    if universe_filter is not None:
        count = count.where(compile_filter(universe_filter, table))
    all_groupings: list[Grouping] = [(), *(tuple(g) for g in groupings)]
    with source.engine.connect() as conn:
        universe = int(conn.execute(count).scalar_one())
        found = _sketches(conn, table, rid, where, all_groupings)
    groups: list[DescribedSet] = []
    for gid, grouping in enumerate(all_groupings[1:], start=1):
        for label, (size, sketch) in found.get(gid, {}).items():
            atoms: list[dict[str, Any]] = []
            labels: list[str | None] = []
            for element, level in zip(grouping, label, strict=True):
                if isinstance(element, Bins | Edges):
                    k = int(level)
                    atoms += element.atoms(k, k + 1)
                    labels.append(span_label(k, k + 1))
                else:
                    atoms.append(_level_atom(element, level))
                    labels.append(
                        category_label(level, source.schema.columns.get(element, "string"))
                    )
            predicate = canonical_predicate(question, atoms)
            groups.append(DescribedSet(size, sketch, predicate, grouping, tuple(labels)))
    whole = found.get(0, {})
    size, sketch = whole.get((), (0, _empty()))
    return Cohort(
        size=size,
        universe=universe,
        filtered=filtered,
        scheme=identity_scheme(source, key),
        sketch=sketch,
        predicate=canonical_predicate(question),
        groups=tuple(groups),
        question=question,
    )


def question_of(
    filter_: Mapping[str, Any] | None,
    cohort_filter: Mapping[str, Any] | None,
    derived: Set[str],
) -> Mapping[str, Any] | None:
    """Return the question a cohort is remembered under: the researcher's filter, and the
    analysis's narrowing to non-missing values of each derived variable in `derived`.

    A declared column's missing values are the data's; a derived variable's are the
    researcher's to write (`I(sbp + 0 / ((age - 67) ** 2 + (diabetic - 1) ** 2))` is
    missing only for a diabetic aged 67). Left out of the question, such a narrowing would
    make "the same question" describe one record fewer exactly when the target has the
    value, and the memory's answer (the same records, or a near difference) would say so.
    """
    terms: list[Any] = []
    if cohort_filter is not None:
        terms = list(cohort_filter["and"]) if "and" in cohort_filter else [cohort_filter]
    asked = [] if filter_ is None else list(filter_.get("and", [filter_]))
    narrowing = [
        t for t in terms if t.get("op") == "not_null" and t.get("col") in derived and t not in asked
    ]
    if not narrowing:
        return filter_
    parts = ([] if filter_ is None else [filter_]) + narrowing
    return parts[0] if len(parts) == 1 else {"and": parts}


def _level_atom(column: str, level: Any) -> dict[str, Any]:
    if level is None:
        return {"col": column, "op": "is_null"}
    return {"col": column, "op": "==", "value": level}


def canonical_predicate(
    filter_: Mapping[str, Any] | None, atoms: Sequence[Mapping[str, Any]] = ()
) -> str:
    """Return a digest of the question "filter AND atoms" in a canonical form.

    ANDs are flattened and, like ORs, their terms sorted; numbers compare as numbers
    (40 and 40.0 alike); so a rewrite that only reorders or regroups terms, or asks for
    a group as a filter ("sex == F" against the table's row F), is the same question.
    """
    terms: list[Any] = []
    for part in ([filter_] if filter_ is not None else []) + list(atoms):
        canon = _canonical(part)
        terms += canon[1] if canon[0] == "and" else [canon]
    form = ["and", sorted(terms, key=_sort_key)] if len(terms) != 1 else terms[0]
    text = json.dumps(form, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _canonical(node: Any) -> Any:
    if isinstance(node, Mapping) and ("and" in node or "or" in node):
        op = "and" if "and" in node else "or"
        children: list[Any] = []
        for child in node[op]:
            canon = _canonical(child)
            children += canon[1] if canon[0] == op else [canon]
        children = sorted(children, key=_sort_key)
        return children[0] if len(children) == 1 else [op, children]
    if isinstance(node, Mapping) and "not" in node:
        return ["not", _canonical(node["not"])]
    if isinstance(node, Mapping):
        value = node.get("value")
        if isinstance(value, list):
            value = sorted((_value(v) for v in value), key=_sort_key)
        else:
            value = _value(value)
        return ["leaf", node.get("col"), node.get("op"), value]
    return ["other", repr(node)]


def _value(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    return str(value)


def _sort_key(item: Any) -> str:
    return json.dumps(item, sort_keys=True, default=str)


def _empty() -> np.ndarray:
    return np.zeros((PARTS, CELLS, 3), dtype=np.int64)


def _sketches(
    conn: sa.Connection,
    table: sa.FromClause,
    rid: Any,
    where: Any,
    groupings: Sequence[Grouping],
) -> dict[int, dict[tuple[Any, ...], tuple[int, np.ndarray]]]:
    """Return {grouping index: {group label: (size, sketch)}} in one statement.

    A sketch is linear in its records, so only the widest groupings (those no other
    grouping contains) are sketched by the engine, and every narrower one, the whole
    cohort () included, is the sum of their groups' sketches (a table's margins are sums
    of its cells): each record is aggregated once per part, not once per part and
    grouping. Records in no bin of a binning are sketched under a NULL bin, so they count
    in the groupings without that binning, and are left out of those with it.
    """
    widest = _widest(groupings)
    found = _engine_sketches(conn, table, rid, where, widest)
    result: dict[int, dict[tuple[Any, ...], tuple[int, np.ndarray]]] = {}
    for gid, grouping in enumerate(groupings):
        source = next(w for w in widest if set(grouping) <= set(w))
        positions = [source.index(e) for e in grouping]
        binned = [i for i, e in enumerate(grouping) if isinstance(e, Bins | Edges)]
        sums: dict[tuple[Any, ...], np.ndarray] = {}
        for label, sketch in found.get(source, {}).items():
            narrow = tuple(label[i] for i in positions)
            if any(narrow[i] is None for i in binned):
                continue
            total = sums.get(narrow)
            if total is None:
                sums[narrow] = sketch.copy()
            else:
                total[:, :, 0] += sketch[:, :, 0]
                total[:, :, 1:] = (total[:, :, 1:] + sketch[:, :, 1:]) % ID_PRIME
        if sums:
            result[gid] = {label: (int(s[0, :, 0].sum()), s) for label, s in sums.items()}
    return result


def _widest(groupings: Sequence[Grouping]) -> list[Grouping]:
    """Return the groupings contained in no other (one of equal ones), () when none."""
    distinct = list(dict.fromkeys(groupings)) or [()]
    return [g for g in distinct if not any(set(g) < set(other) for other in distinct)]


def _engine_sketches(
    conn: sa.Connection,
    table: sa.FromClause,
    rid: Any,
    where: Any,
    groupings: Sequence[Grouping],
) -> dict[Grouping, dict[tuple[Any, ...], np.ndarray]]:
    """Return {grouping: {group label: sketch}} in one statement, NULL bins included.

    When the id is a hash computed by the query, the cohort's records are read once into a
    materialised CTE holding each record's id and its group columns and bin indices (so
    the id's hash runs once per record); a stored id is read by each part instead. One
    GROUP BY per (grouping, part), in one statement, computing each record's cell and
    check hash from its id, then fills every sketch.
    """
    elements = list(dict.fromkeys(e for g in groupings for e in g))
    slot = {e: f"g{i}" for i, e in enumerate(elements)}

    def value_of(element: GroupingElement) -> sa.ColumnElement[Any]:
        if isinstance(element, Bins | Edges):
            return sa.cast(element.index_sql(table), sa.BigInteger)
        return table.c[element]

    def type_of(element: GroupingElement) -> Any:
        return sa.BigInteger() if isinstance(element, Bins | Edges) else table.c[element].type

    ids = sa.select(
        sa.cast(rid, sa.BigInteger).label("rid"),
        *(value_of(e).label(slot[e]) for e in elements),
    ).select_from(table)
    if where is not None:
        ids = ids.where(where)
    if computes_hash(rid):
        # The id is a hash of the record: computed once per record, into a table the parts
        # read. Only the id is materialised: hashes computed from it in the same SELECT
        # were each the id's whole MD5 again once PostgreSQL inlined it (7x the time).
        records: Any = materialized(ids.cte("records"))
    else:
        # The id is stored (a file dataset's extract): each part reads it afresh, which
        # streams, where a materialised table of every record spills to disk at scale.
        records = ids.subquery("records")
    # Each grouping has label columns of its own (one type each, NULL elsewhere), so the
    # union never mixes a text column with a number.
    names = [[f"l{gid}_{i}" for i in range(len(g))] for gid, g in enumerate(groupings)]
    parts = []
    for gid in range(len(groupings)):
        labels = [
            (
                records.c[slot[e]]
                if other == gid
                else sa.cast(sa.null(), type_of(e))  # typed: PostgreSQL's UNION
            ).label(name)
            for other, (g, ns) in enumerate(zip(groupings, names, strict=True))
            for e, name in zip(g, ns, strict=True)
        ]
        own = [records.c[slot[e]] for e in groupings[gid]]
        for p in range(PARTS):
            cell = _hash_sql(records.c.rid, p) % CELLS
            # Each part aggregates its own records: one small GROUP BY per part, not one
            # over the union of every part's records.
            parts.append(
                sa.select(
                    sa.literal(gid, sa.Integer).label("gid"),
                    *labels,
                    sa.literal(p, sa.Integer).label("part"),
                    cell.label("cell"),
                    sa.func.count(),
                    sa.func.sum(records.c.rid),
                    sa.func.sum(_hash_sql(records.c.rid, PARTS)),
                ).group_by(*own, cell)
            )
    query = sa.union_all(*parts)
    width = sum(len(ns) for ns in names)
    offsets = [sum(len(ns) for ns in names[:gid]) for gid in range(len(groupings))]
    found: dict[Grouping, dict[tuple[Any, ...], np.ndarray]] = {}
    for row in conn.execute(query):
        gid = int(row[0])
        start = 1 + offsets[gid]
        label = tuple(row[start : start + len(groupings[gid])])
        part, cell, n, ids, chk = row[1 + width :]
        sketch = found.setdefault(groupings[gid], {}).setdefault(label, _empty())
        sketch[int(part), int(cell)] = (int(n), int(ids) % ID_PRIME, int(chk) % ID_PRIME)
    return found


def symmetric_difference(a: np.ndarray, b: np.ndarray, *, limit: int) -> int | None:
    """Return the size of the symmetric difference of the sets sketched by a and b when it
    is below `limit`; None when it is at least `limit` (or too large to list)."""
    counts = (a[:, :, 0] - b[:, :, 0]).tolist()
    ids = ((a[:, :, 1] - b[:, :, 1]) % ID_PRIME).tolist()
    checks = ((a[:, :, 2] - b[:, :, 2]) % ID_PRIME).tolist()
    found = 0
    progress = True
    while progress:
        progress = False
        for p in range(PARTS):
            for c in range(CELLS):
                n = counts[p][c]
                if n == 0 or n % ID_PRIME == 0:
                    continue
                # A pure cell holds one id |n| times: ids = n x id, checks = n x check(id).
                rid = ids[p][c] * pow(n % ID_PRIME, -1, ID_PRIME) % ID_PRIME
                check = _hash_py(rid, PARTS)
                if rid == 0 or check * n % ID_PRIME != checks[p][c]:
                    continue
                found += abs(n)
                if found >= limit:
                    return None
                for q in range(PARTS):
                    cell = _hash_py(rid, q) % CELLS
                    counts[q][cell] -= n
                    ids[q][cell] = (ids[q][cell] - n * rid) % ID_PRIME
                    checks[q][cell] = (checks[q][cell] - n * check) % ID_PRIME
                progress = True
    if any(any(row) for row in counts) or any(any(row) for row in ids):
        return None  # more than the cells can list: far above the threshold
    return found


def sketch_of_ids(ids: Iterable[int]) -> np.ndarray:
    """Return the sketch of a multiset of record ids, as the engine computes it (for tests
    and tools; the agent never holds record ids)."""
    sketch = _empty()
    for rid in ids:
        for p in range(PARTS):
            cell = _hash_py(rid, p) % CELLS
            sketch[p, cell, 0] += 1
            sketch[p, cell, 1] = (sketch[p, cell, 1] + rid) % ID_PRIME
            sketch[p, cell, 2] = (sketch[p, cell, 2] + _hash_py(rid, PARTS)) % ID_PRIME
    return sketch


def encode_sketch(sketch: np.ndarray) -> bytes:
    """Return the sketch as bytes for the agent's state."""
    return np.ascontiguousarray(sketch, dtype=">i8").tobytes()


def decode_sketch(blob: bytes) -> np.ndarray:
    """Return the sketch stored by encode_sketch."""
    return np.frombuffer(blob, dtype=">i8").astype(np.int64).reshape(PARTS, CELLS, 3)


def cohort_size_rule(cohort: Cohort, policy: DisclosurePolicy) -> RuleResult:
    """Check that a filtered cohort, and what it leaves out, each hold threshold records."""
    t = policy.threshold
    if not cohort.filtered:
        return RuleResult(COHORT_SIZE, True, "no filter: the output describes every record")
    if cohort.size < t:
        return RuleResult(
            COHORT_SIZE, False, f"the filter selects fewer than {t} records, so nothing is released"
        )
    if cohort.universe - cohort.size < t:
        return RuleResult(
            COHORT_SIZE,
            False,
            f"the filter leaves out fewer than {t} records: comparing with the unfiltered "
            "result would describe them, so nothing is released",
        )
    return RuleResult(
        COHORT_SIZE, True, f"the filter selects, and leaves out, at least {t} records each"
    )


def differencing_rule(difference: int | None, policy: DisclosurePolicy) -> RuleResult:
    """Return the differencing rule's result: None passes; 0 is the same records asked by a
    different question; 1..threshold-1 a near difference."""
    t = policy.threshold
    if difference == 0:
        return RuleResult(
            DIFFERENCING,
            False,
            "the cohort or one of its groups holds exactly the records an earlier, different "
            "question described; answering would tell whether the difference between the two "
            "questions is empty, so nothing is released (ask the earlier question again for "
            "its answer)",
        )
    if difference is None:
        return RuleResult(
            DIFFERENCING,
            True,
            f"the cohort and its groups differ from every set described on this dataset by 0 "
            f"or at least {t} records",
        )
    return RuleResult(
        DIFFERENCING,
        False,
        f"the cohort or one of its groups differs from a set already described on this "
        f"dataset by fewer than {t} records; comparing the two results would describe those "
        "records, so nothing is released",
    )
