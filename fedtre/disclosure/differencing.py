"""Differencing protection: the cohort rules and the memory of cohorts already answered.

Two released figures about cohorts A and B that differ by a few records describe those
few records: count(age >= 40) - count(age >= 40 and id != 17) is person 17. So:

- cohort_size: a filtered output's cohort must hold at least `threshold` records and
  leave at least `threshold` of the analysis's records outside it (the complement
  attack: "everyone but these 3" against "everyone").
- differencing: the agent keeps, per project and dataset, each cohort it has answered
  (released or held for review). A new cohort whose symmetric difference with any of
  them is between 1 and threshold - 1 records is blocked. An identical cohort (0) is
  fine: asking the same question twice reveals nothing new.

A cohort is the set of records an output describes: the filter's records, narrowed by
the analysis where it ignores some (a summary ignores records whose column is NULL; see
Analysis.cohort_filter). Records are identified by

- the dataset's declared `key` column (url datasets), read with the cohort's filter; or
- otherwise, a fingerprint of each record's declared columns. Filters and analyses see
  only declared columns, so records with identical declared values are in or out of
  every cohort together and a multiset of fingerprints measures exactly how far two
  cohorts differ in everything the network can ask about.

Members are stored as sorted 64-bit BLAKE2b hashes, zlib-compressed. Only cohorts whose
size is within threshold - 1 of the new one can be that close, so the check decodes
only those. A 64-bit collision could make two different records look alike; at a
billion records the chance of any collision within a cohort is about 3%, and a
collision can only make a difference look smaller (more blocking), never larger.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from fedtre.analyses.base import DataSource, RuleResult
from fedtre.analyses.filters import compile_filter
from fedtre.disclosure.policy import DisclosurePolicy
from fedtre.disclosure.rules import COHORT_SIZE, DIFFERENCING

_STREAM_ROWS = 50_000


@dataclass(frozen=True)
class Cohort:
    """The records an output describes, as hashes; never leaves the agent.

    size: records in the cohort; universe: records the analysis describes without a
    filter; filtered: whether a filter narrowed it; scheme: how records were identified
    (cohorts are comparable only under the same scheme).
    """

    size: int
    universe: int
    filtered: bool
    scheme: str
    members: np.ndarray

    @property
    def digest(self) -> str:
        """SHA-256 of the sorted member hashes: equal cohorts have equal digests."""
        return hashlib.sha256(self.members.tobytes()).hexdigest()


def identity_scheme(source: DataSource, key: str | None) -> str:
    """Return how records of `source` are identified: by key column or by declared values."""
    if key:
        return f"key:{key}"
    columns = ",".join(f"{c}:{t}" for c, t in sorted(source.schema.columns.items()))
    return "values:" + hashlib.sha256(columns.encode()).hexdigest()[:16]


def measure_cohort(
    source: DataSource,
    cohort_filter: Mapping[str, Any] | None,
    universe_filter: Mapping[str, Any] | None,
    *,
    key: str | None = None,
    filtered: bool,
) -> Cohort:
    """Read the cohort's record identities (streamed) and the universe's size at the agent."""
    table = source.table
    if key:
        ids: list[Any] = [sa.column(key)]
    else:
        ids = [table.c[name] for name in source.schema.columns]
    query = sa.select(*ids).select_from(table)
    if cohort_filter is not None:
        query = query.where(compile_filter(cohort_filter, table))
    count = sa.select(sa.func.count()).select_from(table)
    if universe_filter is not None:
        count = count.where(compile_filter(universe_filter, table))
    with source.engine.connect() as conn:
        universe = int(conn.execute(count).scalar_one())
        result = conn.execution_options(stream_results=True, yield_per=_STREAM_ROWS).execute(query)
        members = hash_rows(result)
    return Cohort(
        size=len(members),
        universe=universe,
        filtered=filtered,
        scheme=identity_scheme(source, key),
        members=members,
    )


def hash_rows(rows: Iterable[Sequence[Any]]) -> np.ndarray:
    """Return the sorted 64-bit hashes of rows (a multiset: equal rows, equal hashes).

    Hashes are packed into arrays a chunk at a time: 8 bytes a record rather than a
    Python int's 36 (at ten million records, 80 MB instead of 440 MB; bench/README.md).
    """
    chunks: list[np.ndarray] = []
    values: list[int] = []
    for row in rows:
        digest = hashlib.blake2b(repr(tuple(row)).encode(), digest_size=8).digest()
        values.append(int.from_bytes(digest, "big"))
        if len(values) == _STREAM_ROWS:
            chunks.append(np.array(values, dtype=np.uint64))
            values = []
    chunks.append(np.array(values, dtype=np.uint64))
    members = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
    members.sort()
    return members


def symmetric_difference(a: np.ndarray, b: np.ndarray) -> int:
    """Return the size of the multiset symmetric difference of two sorted hash arrays."""
    ua, ca = np.unique(a, return_counts=True)
    ub, cb = np.unique(b, return_counts=True)
    _, ia, ib = np.intersect1d(ua, ub, assume_unique=True, return_indices=True)
    shared = int(np.minimum(ca[ia], cb[ib]).sum())
    return len(a) + len(b) - 2 * shared


def encode_members(members: np.ndarray) -> bytes:
    """Return the members as compact bytes for the agent's state (sorted, delta, zlib)."""
    deltas = np.diff(members, prepend=np.uint64(0)).astype(">u8")
    return zlib.compress(deltas.tobytes(), 6)


def decode_members(blob: bytes) -> np.ndarray:
    """Return the sorted member hashes stored by encode_members."""
    deltas = np.frombuffer(zlib.decompress(blob), dtype=">u8").astype(np.uint64)
    return np.cumsum(deltas, dtype=np.uint64)


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


def closest_difference(
    cohort: Cohort, earlier: Iterable[np.ndarray], policy: DisclosurePolicy
) -> int | None:
    """Return the smallest non-zero difference below threshold from an earlier cohort, or None."""
    worst: int | None = None
    for members in earlier:
        if abs(len(members) - cohort.size) >= policy.threshold:
            continue
        d = symmetric_difference(cohort.members, members)
        if 0 < d < policy.threshold and (worst is None or d < worst):
            worst = d
    return worst


def differencing_rule(difference: int | None, policy: DisclosurePolicy) -> RuleResult:
    """Return the differencing rule's result from closest_difference's answer."""
    t = policy.threshold
    if difference is None:
        return RuleResult(
            DIFFERENCING,
            True,
            f"the cohort differs from every cohort this project was answered on by 0 or at "
            f"least {t} records",
        )
    return RuleResult(
        DIFFERENCING,
        False,
        f"the cohort differs from one this project was already answered on by fewer than {t} "
        "records; comparing the two results would describe those records, so nothing is "
        "released",
    )
