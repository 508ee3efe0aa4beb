"""The filter language: validation, schema checks, SQLAlchemy compilation and a text parser.

A filter is a JSON-like structure, so it travels inside a google.protobuf.Struct:

    {"and": [f, ...]}   {"or": [f, ...]}   {"not": f}
    {"col": "age", "op": ">=", "value": 40}
    {"col": "smoking", "op": "in", "value": ["current", "former"]}
    {"col": "bmi", "op": "is_null"}

Operators: ==, !=, <, <=, >, >= (value: a number, string or boolean), in and not_in
(value: a non-empty list of those), is_null and not_null (no value).

NULL semantics: a comparison (==, !=, <, ..., in, not_in) is false, never "unknown",
on a row where the column is NULL, so `not` is an exact complement: `not (age > 40)`
includes the rows whose age is missing. `!=` and `not_in` do not match NULL; use
is_null / not_null to select missing values explicitly.

Dates are compared with ISO "YYYY-MM-DD" strings.
"""

from __future__ import annotations

import datetime as dt
import math
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import sqlalchemy as sa

from fedtre.analyses.base import NUMERIC_TYPES, DatasetSchema
from fedtre.analyses.expressions import MAX_NAME, is_expression, normalise_column
from fedtre.errors import InvalidRequest, NotFound
from fedtre.suggest import columns_hint

# Limits against abuse: a filter arrives from outside the TRE and is compiled inside it.
MAX_DEPTH = 16
MAX_NODES = 256
MAX_IN_ITEMS = 1000
MAX_STRING = 1000
MAX_TEXT = 20_000

COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")
ORDERING = frozenset({"<", "<=", ">", ">="})
LIST_OPS = ("in", "not_in")
NULL_OPS = ("is_null", "not_null")
OPERATORS = COMPARISONS + LIST_OPS + NULL_OPS

_EXAMPLE = '{"col": "age", "op": ">=", "value": 40}'
_SHAPES = f'{_EXAMPLE}, {{"and": [...]}}, {{"or": [...]}} or {{"not": {{...}}}}'
_OP_HINTS = {
    "=": "==",
    "<>": "!=",
    "=<": "<=",
    "=>": ">=",
    "not in": "not_in",
    "notin": "not_in",
    "is null": "is_null",
    "isnull": "is_null",
    "is not null": "not_null",
    "not null": "not_null",
    "is_not_null": "not_null",
    "notnull": "not_null",
}
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


# --------------------------------------------------------------------------- validation


def validate_filter(f: Any) -> dict[str, Any]:
    """Return the normalised form of filter `f`.

    Normalisation makes validation idempotent across a Struct round trip: whole-valued
    floats become ints (40.0 -> 40), tuples become lists.
    Raises InvalidRequest naming the offending part (e.g. `filter.and[1].op`) and how to
    write it.
    """
    counter = [0]
    return _validate(f, "filter", 1, counter)


def _validate(f: Any, path: str, depth: int, counter: list[int]) -> dict[str, Any]:
    if depth > MAX_DEPTH:
        raise InvalidRequest(
            f"{path}: the filter is nested more than {MAX_DEPTH} levels deep; "
            "flatten it, e.g. list the conditions of nested 'and's in one 'and'"
        )
    counter[0] += 1
    if counter[0] > MAX_NODES:
        raise InvalidRequest(
            f"{path}: the filter has more than {MAX_NODES} parts; "
            "simplify it, e.g. use one 'in' list instead of many '==' joined by 'or'"
        )
    if not isinstance(f, Mapping):
        raise InvalidRequest(f"{path}: expected a filter such as {_SHAPES}; got {_kind(f)}")
    keys = set(f)
    for logical in ("and", "or"):
        if logical in keys:
            _no_extra_keys(keys, {logical}, path, f"an '{logical}' takes only a list of filters")
            items = f[logical]
            if not isinstance(items, list | tuple) or not items:
                raise InvalidRequest(
                    f"{path}.{logical}: expected a non-empty list of filters, "
                    f'e.g. {{"{logical}": [{_EXAMPLE}, ...]}}; got {_kind(items)}'
                )
            return {
                logical: [
                    _validate(item, f"{path}.{logical}[{i}]", depth + 1, counter)
                    for i, item in enumerate(items)
                ]
            }
    if "not" in keys:
        _no_extra_keys(keys, {"not"}, path, "a 'not' takes only one filter")
        return {"not": _validate(f["not"], f"{path}.not", depth + 1, counter)}
    if "col" in keys or "op" in keys:
        return _validate_condition(f, keys, path)
    raise InvalidRequest(f"{path}: unknown key(s) {_names(keys)}; a filter is one of {_SHAPES}")


def _validate_condition(f: Mapping[Any, Any], keys: set[Any], path: str) -> dict[str, Any]:
    col = f.get("col")
    if not isinstance(col, str) or not col:
        raise InvalidRequest(
            f"{path}.col: expected a column name (a non-empty string), e.g. {_EXAMPLE}; "
            f"got {_kind(col)}"
        )
    if not is_expression(col) and len(col) > MAX_NAME:
        raise InvalidRequest(f"{path}.col: column names are at most {MAX_NAME} characters")
    # A derived variable (e.g. bands(age, [40, 60])) is kept in its one canonical text.
    col = normalise_column(col, what=f"{path}.col")
    op = f.get("op")
    if not isinstance(op, str) or op not in OPERATORS:
        raise InvalidRequest(f"{path}.op: {_unknown_op(op)}")
    if op in NULL_OPS:
        if "value" in keys:
            raise InvalidRequest(f"{path}: '{op}' takes no value; remove the 'value' key")
        _no_extra_keys(keys, {"col", "op"}, path, f"a condition with '{op}' has 'col' and 'op'")
        return {"col": col, "op": op}
    _no_extra_keys(keys, {"col", "op", "value"}, path, "a condition has 'col', 'op' and 'value'")
    if "value" not in keys:
        raise InvalidRequest(f"{path}: '{op}' needs a 'value', e.g. {_EXAMPLE}")
    value = f["value"]
    if op in LIST_OPS:
        return {"col": col, "op": op, "value": _validate_list(value, op, f"{path}.value")}
    return {"col": col, "op": op, "value": _validate_scalar(value, op, f"{path}.value")}


def _validate_list(value: Any, op: str, path: str) -> list[Any]:
    if not isinstance(value, list | tuple) or not value:
        raise InvalidRequest(
            f"{path}: '{op}' needs a non-empty list of values, "
            f'e.g. {{"col": "smoking", "op": "{op}", "value": ["current", "former"]}}; '
            f"got {_kind(value)}"
        )
    if len(value) > MAX_IN_ITEMS:
        raise InvalidRequest(f"{path}: an '{op}' list holds at most {MAX_IN_ITEMS} values")
    items = [_validate_scalar(v, op, f"{path}[{i}]") for i, v in enumerate(value)]
    kinds = {_value_kind(v) for v in items}
    if len(kinds) > 1:
        raise InvalidRequest(
            f"{path}: the values of an '{op}' list must all be of one kind; "
            f"got a mix of {', '.join(sorted(kinds))}"
        )
    return items


def _validate_scalar(value: Any, op: str, path: str) -> Any:
    if value is None:
        raise InvalidRequest(
            f"{path}: null is not a value to compare with; use the operator "
            "'is_null' or 'not_null' instead"
        )
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRequest(f"{path}: numbers must be finite (no NaN or infinity)")
        # A Struct round trip turns 40 into 40.0; folding it back keeps the form canonical.
        if value.is_integer() and abs(value) <= 2**53:
            return int(value)
        return value
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise InvalidRequest(f"{path}: strings are at most {MAX_STRING} characters")
        return value
    raise InvalidRequest(
        f"{path}: '{op}' compares with a number, a string or true/false; got {_kind(value)}"
    )


def _no_extra_keys(keys: set[Any], allowed: set[str], path: str, rule: str) -> None:
    extra = keys - allowed
    if extra:
        raise InvalidRequest(f"{path}: unexpected key(s) {_names(extra)}; {rule}")


def _unknown_op(op: Any) -> str:
    known = ", ".join(OPERATORS)
    if not isinstance(op, str):
        return f"expected an operator (one of {known}); got {_kind(op)}"
    hint = _OP_HINTS.get(op.strip().lower())
    if hint:
        return f"unknown operator {op!r}; did you mean '{hint}'? Operators: {known}"
    return f"unknown operator {_short(op)}; use one of {known}"


def _value_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return f"the string {_short(value)}"
    if isinstance(value, list | tuple):
        return "an empty list" if not value else "a list"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"


def _short(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _names(keys: set[Any]) -> str:
    return ", ".join(sorted(_short(str(k)) for k in keys))


# --------------------------------------------------------------------------- schema


def _conditions(f: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for logical in ("and", "or"):
        if logical in f:
            for item in f[logical]:
                yield from _conditions(item)
            return
    if "not" in f:
        yield from _conditions(f["not"])
        return
    yield f


def filter_columns(f: Any) -> set[str]:
    """Return the names of the columns filter `f` uses; raises InvalidRequest if malformed."""
    return {c["col"] for c in _conditions(validate_filter(f))}


def filter_problems(f: Any, schema: DatasetSchema) -> list[str]:
    """Return every problem of filter `f` against one dataset's declared columns.

    Reports undeclared columns (listing the declared ones) and values of the wrong kind
    for a column's declared type. Raises InvalidRequest if `f` is malformed.
    """
    problems: list[str] = []
    for cond in _conditions(validate_filter(f)):
        col = cond["col"]
        ctype = schema.columns.get(col)
        if ctype is None:
            problem = (
                f"the filter uses column {_short(col)}, which is not declared in dataset "
                f"{schema.name!r}" + columns_hint(col, schema.columns)
            )
        else:
            type_problem = _type_problem(cond, ctype)
            problem = type_problem or ""
        if problem and problem not in problems:
            problems.append(problem)
    return problems


def _type_problem(cond: Mapping[str, Any], ctype: str) -> str | None:
    col, op = cond["col"], cond["op"]
    if op in NULL_OPS:
        return None
    values = cond["value"] if op in LIST_OPS else [cond["value"]]
    where = f"the filter compares {ctype} column {col!r}"
    if ctype in NUMERIC_TYPES:
        wrong = [v for v in values if _value_kind(v) != "number"]
        if wrong:
            return f"{where} with {_kind(wrong[0])}; write a number, e.g. {col} >= 40"
    elif ctype == "string":
        wrong = [v for v in values if not isinstance(v, str)]
        if wrong:
            return f'{where} with {_kind(wrong[0])}; quote the value, e.g. {col} == "{wrong[0]}"'
    elif ctype == "boolean":
        if op in ORDERING:
            return f"{where} with '{op}'; booleans take only ==, !=, in and not_in"
        wrong = [v for v in values if not isinstance(v, bool)]
        if wrong:
            return f"{where} with {_kind(wrong[0])}; write true or false"
    elif ctype == "date":
        wrong = [v for v in values if _parse_date(v) is None]
        if wrong:
            return (
                f'{where} with {_kind(wrong[0])}; write dates as "YYYY-MM-DD" strings, '
                f'e.g. {col} >= "2020-01-31"'
            )
    else:
        return f"column {col!r} has declared type {ctype!r}, which filters cannot compare"
    return None


def _parse_date(value: Any) -> dt.date | None:
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


# --------------------------------------------------------------------------- SQL


def compile_filter(f: Any, table: sa.FromClause) -> sa.ColumnElement[bool]:
    """Return filter `f` as a SQLAlchemy Core boolean expression over `table`.

    Only the table's own Column objects and bound parameters are used; there is no
    string SQL. Raises InvalidRequest if `f` is malformed and NotFound if it names a
    column the table does not expose.
    """
    return _compile(validate_filter(f), table, under_not=False)


def _compile(f: Mapping[str, Any], table: sa.FromClause, under_not: bool) -> Any:
    if "and" in f:
        return sa.and_(*(_compile(item, table, under_not) for item in f["and"]))
    if "or" in f:
        return sa.or_(*(_compile(item, table, under_not) for item in f["or"]))
    if "not" in f:
        return sa.not_(_compile(f["not"], table, under_not=True))
    column = _column(table, f["col"])
    op = f["op"]
    if op == "is_null":
        return column.is_(None)
    if op == "not_null":
        return column.is_not(None)
    if op in LIST_OPS:
        values = [_bind_value(column, v) for v in f["value"]]
        expr = column.in_(values) if op == "in" else column.not_in(values)
    else:
        expr = _COMPARE[op](column, _bind_value(column, f["value"]))
    # Outside a `not`, a NULL (unknown) comparison already drops the row like false does.
    # Under a `not`, SQL's three-valued logic would drop it too (NOT NULL is NULL), so
    # pin the comparison to false on NULL to make `not` an exact complement.
    return sa.and_(column.is_not(None), expr) if under_not else expr


def _column(table: sa.FromClause, name: str) -> sa.ColumnElement[Any]:
    if name not in table.c:
        declared = ", ".join(sorted(c.key for c in table.c))
        raise NotFound(
            f"the filter uses column {_short(name)}, which is not declared in this dataset; "
            f"declared columns: {declared or '(none)'}"
        )
    return table.c[name]


def _bind_value(column: sa.ColumnElement[Any], value: Any) -> Any:
    if isinstance(value, str) and isinstance(column.type, sa.Date | sa.DateTime):
        # Typed date columns need a date object so every engine's driver binds it natively;
        # a date stored as text compares correctly with the ISO string as it is.
        parsed = _parse_date(value)
        if parsed is None:
            raise InvalidRequest(
                f"the filter compares date column {column.key!r} with {_kind(value)}; "
                'write dates as "YYYY-MM-DD" strings'
            )
        return parsed
    if isinstance(value, bool) and not isinstance(column.type, sa.Boolean):
        # A boolean kept in an integer column (SQLite's own storage) compares with 0/1.
        return int(value)
    return value


# --------------------------------------------------------------------------- text form


class _Token(NamedTuple):
    kind: str  # number, string, name, keyword, op, "(", ")", ",", end
    value: Any
    pos: int


_KEYWORDS = frozenset({"and", "or", "not", "in", "is", "null", "true", "false"})
_TOKEN_RE = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|<|>)
  | (?P<punct>[(),])
    """,
    re.VERBOSE,
)
_BAD_CHAR_HINTS = {
    "=": "use '==' to test equality",
    "!": "use 'not' to negate, or '!=' for not equal",
    "&": "use 'and'",
    "|": "use 'or'",
    "[": 'write the values of \'in\' in parentheses, e.g. smoking in ("current", "former")',
}
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t"}
# Parentheses and `not` each recurse; this bounds the recursion well below Python's limit.
_MAX_PARSE_NESTING = 4 * MAX_DEPTH


def parse_filter_text(text: str) -> dict[str, Any]:
    """Parse the text form of a filter (for the CLI) into its validated dict form.

    Example: `age >= 40 and sex == "F" and not (smoking in ("current", "former")) or
    bmi is null`. Precedence: not > and > or. Values are numbers, "double" or 'single'
    quoted strings, and true/false; a column name that is not a plain identifier is
    written in backticks. Raises InvalidRequest with the position of the problem.
    """
    if not isinstance(text, str):
        raise InvalidRequest("a filter in text form must be a string")
    if len(text) > MAX_TEXT:
        raise InvalidRequest(f"the filter text is longer than {MAX_TEXT} characters")
    parser = _Parser(text, _tokenize(text))
    return validate_filter(parser.parse())


def _syntax_error(text: str, pos: int, message: str) -> InvalidRequest:
    start = max(0, pos - 40)
    snippet = text[start : pos + 40]
    prefix = "..." if start else ""
    suffix = "..." if pos + 40 < len(text) else ""
    shown = (prefix + snippet + suffix).translate({ord(c): " " for c in "\t\r\n"})
    caret = " " * (len(prefix) + pos - start) + "^"
    return InvalidRequest(
        f"cannot parse the filter at position {pos + 1}: {message}\n  {shown}\n  {caret}"
    )


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char in "\"'`":
            value, end = _read_quoted(text, pos)
            tokens.append(_Token("name" if char == "`" else "string", value, pos))
            pos = end
            continue
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            hint = _BAD_CHAR_HINTS.get(char, "expected a name, value, operator or parenthesis")
            raise _syntax_error(text, pos, f"unexpected character {char!r}; {hint}")
        kind, raw = match.lastgroup, match.group()
        if kind == "number":
            is_int = not any(c in raw for c in ".eE")
            tokens.append(_Token("number", int(raw) if is_int else float(raw), pos))
        elif kind == "name":
            word = raw.lower()
            if word in _KEYWORDS:
                tokens.append(_Token("keyword", word, pos))
            else:
                tokens.append(_Token("name", raw, pos))
        elif kind == "op":
            tokens.append(_Token("op", raw, pos))
        elif kind == "punct":
            tokens.append(_Token(raw, raw, pos))
        pos = match.end()
    tokens.append(_Token("end", None, len(text)))
    return tokens


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    quote = text[start]
    out: list[str] = []
    pos = start + 1
    while pos < len(text):
        char = text[pos]
        if char == quote:
            return "".join(out), pos + 1
        if char == "\\" and quote != "`":
            nxt = text[pos + 1 : pos + 2]
            if nxt not in _ESCAPES:
                raise _syntax_error(
                    text, pos, "unknown escape; inside quotes write \\\\, \\\", \\', \\n or \\t"
                )
            out.append(_ESCAPES[nxt])
            pos += 2
            continue
        out.append(char)
        pos += 1
    what = "column name" if quote == "`" else "string"
    raise _syntax_error(text, start, f"this {what} is never closed; end it with {quote}")


class _Parser:
    """Recursive descent: or_expr := and_expr (or and_expr)*; and_expr := not_expr (and
    not_expr)*; not_expr := not not_expr | ( or_expr ) | condition."""

    def __init__(self, text: str, tokens: list[_Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.index = 0
        self.nesting = 0

    def parse(self) -> dict[str, Any]:
        if self._peek().kind == "end":
            raise self._error("the filter is empty; write a condition such as age >= 40")
        expr = self._or_expr()
        if self._peek().kind != "end":
            raise self._error(f"expected 'and', 'or' or the end, found {self._describe()}")
        return expr

    def _or_expr(self) -> dict[str, Any]:
        items = [self._and_expr()]
        while self._accept_keyword("or"):
            items.append(self._and_expr())
        return items[0] if len(items) == 1 else {"or": items}

    def _and_expr(self) -> dict[str, Any]:
        items = [self._not_expr()]
        while self._accept_keyword("and"):
            items.append(self._not_expr())
        return items[0] if len(items) == 1 else {"and": items}

    def _not_expr(self) -> dict[str, Any]:
        token = self._peek()
        if self._accept_keyword("not"):
            self._enter(token)
            inner = self._not_expr()
            self.nesting -= 1
            return {"not": inner}
        if token.kind == "(":
            self._advance()
            self._enter(token)
            inner = self._or_expr()
            self.nesting -= 1
            if self._peek().kind != ")":
                raise self._error(
                    f"expected ')' to close the '(' at position {token.pos + 1}, "
                    f"found {self._describe()}"
                )
            self._advance()
            return inner
        if token.kind == "name":
            return self._condition()
        raise self._error(
            f"expected a condition such as age >= 40, 'not' or '(', found {self._describe()}"
        )

    def _condition(self) -> dict[str, Any]:
        col = self._advance().value
        token = self._peek()
        if token.kind == "op":
            self._advance()
            return {"col": col, "op": token.value, "value": self._value(token.value)}
        if self._accept_keyword("in"):
            return {"col": col, "op": "in", "value": self._value_list("in")}
        if self._accept_keyword("not"):
            if not self._accept_keyword("in"):
                raise self._error(f"expected 'in' after '{col} not', found {self._describe()}")
            return {"col": col, "op": "not_in", "value": self._value_list("not in")}
        if self._accept_keyword("is"):
            negated = self._accept_keyword("not")
            if not self._accept_keyword("null"):
                raise self._error(
                    f"expected 'null' after 'is{' not' if negated else ''}', "
                    f"found {self._describe()}"
                )
            return {"col": col, "op": "not_null" if negated else "is_null"}
        raise self._error(
            f"expected an operator after column {col!r} (==, !=, <, <=, >, >=, in, not in, "
            f"is null, is not null), found {self._describe()}"
        )

    def _value(self, after: str) -> Any:
        token = self._peek()
        if token.kind in ("number", "string"):
            self._advance()
            return token.value
        if token.kind == "keyword" and token.value in ("true", "false"):
            self._advance()
            return token.value == "true"
        if token.kind == "keyword" and token.value == "null":
            raise self._error("to test for missing values write 'is null' or 'is not null'")
        if token.kind == "name":
            raise self._error(
                f"expected a value after {after!r}, found the name {token.value!r}; "
                f'quote strings, e.g. "{token.value}"'
            )
        raise self._error(f"expected a value after {after!r}, found {self._describe()}")

    def _value_list(self, op: str) -> list[Any]:
        if self._peek().kind != "(":
            raise self._error(
                f"write the values of '{op}' in parentheses, "
                f'e.g. smoking {op} ("current", "former")'
            )
        self._advance()
        values = [self._value(op)]
        while self._peek().kind == ",":
            self._advance()
            if self._peek().kind == ")":
                break
            values.append(self._value(op))
        if self._peek().kind != ")":
            raise self._error(f"expected ',' or ')' in the '{op}' list, found {self._describe()}")
        self._advance()
        return values

    def _enter(self, token: _Token) -> None:
        self.nesting += 1
        if self.nesting > _MAX_PARSE_NESTING:
            raise _syntax_error(self.text, token.pos, "the filter is nested too deeply")

    def _peek(self) -> _Token:
        return self.tokens[self.index]

    def _advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def _accept_keyword(self, word: str) -> bool:
        token = self._peek()
        if token.kind == "keyword" and token.value == word:
            self.index += 1
            return True
        return False

    def _describe(self) -> str:
        token = self._peek()
        if token.kind == "end":
            return "the end of the filter"
        if token.kind == "string":
            return f"the string {_short(token.value)}"
        if token.kind == "name":
            return f"the name {token.value!r}"
        return repr(str(token.value))

    def _error(self, message: str) -> InvalidRequest:
        return _syntax_error(self.text, self._peek().pos, message)
