"""Derived variables: a small formula language over declared columns, compiled to SQL.

A derived variable is written where a column name goes (a covariate, an outcome, `by`,
`rows`/`columns`, a filter's `col`, an offset), in the conventions statsmodels users know
from patsy and formulaic formulas:

    log(x)  exp(x)  sqrt(x)             natural log, exponential, square root
    I(x * 2 + 1)  I(x ** 2)  I(x / y)   arithmetic, written inside I() (or inside a function)
    I(age >= 65)  I(sex == "F")         comparisons (true/false), inside I()
    x:y                                  interaction: the product of two numeric (or 0/1
                                         boolean) variables, or the level pair "a:b" of
                                         two string variables
    bands(age, [40, 50, 60, 70])         "(-inf, 40)", "[40, 50)", ..., "[70, inf)"
    recode(smoking, {"current": "ever", "former": "ever"})   other values kept as they are
    years_between(birth_date, "2020-01-01")                   (d2 - d1) in days / 365.25
    C(x)                                 (covariates only) treat x as categorical

Arithmetic and comparisons outside I() or a function are formula operators in patsy
(`x * y` means x + y + x:y), so here they are an error that says to write I(...).
Column names that are not identifiers are written in backticks.

Missing values: a derived value is NULL (missing) when an input is NULL or the function
is undefined there: log of x <= 0, sqrt of x < 0, exp above 709 (it would overflow),
division by zero; and a numeric value that is not finite (an overflow). Analyses leave
missing values out as they do for declared columns (statsmodels' missing="drop" does the
same with the NaN numpy gives); the differencing memory's question holds that narrowing.

The parser (a Pratt parser, ours: the grammar is a dozen rules, and a parser library
would add a dependency without removing any of the checks) keeps every token's position,
so errors point at the offending token. Compilation uses only the table's declared
Column objects, bound parameters and the functions above: no SQL from the researcher.
Compilation to SQL: fedtre.analyses.expression_sql. Every expression has one canonical text (`canonical`); that text is the derived
variable's name everywhere: in parameters, results, term names and the differencing
memory's question.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedtre.errors import InvalidRequest

# Limits against abuse: an expression arrives from outside the TRE and is compiled inside.
MAX_EXPRESSION = 2000
MAX_NAME = 256
MAX_EXPRESSION_NODES = 200
# Functions and operators inside each other, log, exp and sqrt counting 3 (their guarded SQL
# nests deeper): SQLite's parser overflows its stack near 25 negations or 7 nested logs.
MAX_EXPRESSION_DEPTH = 16
_GUARDED = ("log", "exp", "sqrt")
# Terms of the compiled SQL (fedtre.analyses.expression_sql): log(x) writes x twice (the
# guard and the call), x ** k k times, so nesting multiplies the SQL a TRE's engine gets.
MAX_SQL_TERMS = 2000
# Whole numbers beyond 2**53 are not exact as doubles (and overflow some engines' integers).
MAX_WHOLE = 2**53
MAX_BANDS = 50
MAX_RECODE = 200
MAX_POWER = 10
# exp(x) overflows a double above ln(DBL_MAX) = 709.78...
EXP_LIMIT = 709.0
DAYS_PER_YEAR = 365.25

# Functions a TRE's policy can allow one by one ([policy] derived), and the operators
# that count as one "function" each.
FUNCTIONS = ("log", "exp", "sqrt", "bands", "recode", "years_between")
OPERATORS = ("arithmetic", "compare", "interaction")
FEATURES = FUNCTIONS + OPERATORS

NUMERIC = frozenset({"integer", "float"})
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ARITHMETIC = ("+", "-", "*", "/", "**")
COMPARE = ("==", "!=", "<", "<=", ">", ">=")
_BINDING = {":": 5, **dict.fromkeys(COMPARE, 10), "+": 20, "-": 20, "*": 30, "/": 30, "**": 50}
_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>\*\*|==|!=|<=|>=|[-+*/<>:])
  | (?P<punct>[()\[\]{},])
    """,
    re.VERBOSE,
)
_HINTS = {
    "=": "use '==' to compare",
    "&": "combine conditions in the filter with 'and'",
    "|": "combine conditions in the filter with 'or'",
    "~": "give the outcome and the covariates as separate parameters, not a whole formula",
    ".": "functions are called by their bare name, e.g. log(x) rather than np.log(x)",
}


# --------------------------------------------------------------------------- the tree


@dataclass(frozen=True)
class Expr:
    pos: int


@dataclass(frozen=True)
class Name(Expr):
    name: str


@dataclass(frozen=True)
class Const(Expr):
    value: Any  # int, float, str or bool


@dataclass(frozen=True)
class Seq(Expr):
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Map(Expr):
    pairs: tuple[tuple[Expr, Expr], ...]


@dataclass(frozen=True)
class Call(Expr):
    func: str
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class Binary(Expr):
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Negate(Expr):
    operand: Expr


@dataclass(frozen=True)
class Parsed:
    """An expression with the text it was read from (for errors that point at a token)."""

    text: str
    tree: Expr

    def error(self, node: Expr, message: str) -> InvalidRequest:
        return _pointed(self.text, node.pos, message)


# --------------------------------------------------------------------------- parsing


def is_plain_name(text: str) -> bool:
    """Return True when text is a bare identifier (a declared column's usual name)."""
    return bool(_IDENTIFIER.fullmatch(text))


def is_expression(text: str) -> bool:
    """Return True when text is written as a derived variable rather than a column name:
    every expression calls a function or joins two variables with ':', and arithmetic or a
    comparison written bare is an expression missing its I() (said so when parsed)."""
    return any(c in text for c in "(:*/+<>=")


def parse_expression(text: str) -> Parsed:
    """Return the tree of a derived-variable expression; raises InvalidRequest pointing at
    the token it cannot read."""
    if not isinstance(text, str):
        raise InvalidRequest("an expression must be a string, e.g. log(follow_up_days)")
    if len(text) > MAX_EXPRESSION:
        raise InvalidRequest(f"an expression is at most {MAX_EXPRESSION} characters")
    parser = _Parser(text, _tokenize(text))
    tree = parser.parse()
    depth, terms = _measure(tree)
    if depth > MAX_EXPRESSION_DEPTH:
        raise _pointed(
            text,
            0,
            f"the expression nests functions and operators {depth} deep, counting log, exp "
            f"and sqrt as 3; at most {MAX_EXPRESSION_DEPTH}",
        )
    if terms > MAX_SQL_TERMS:
        raise _pointed(
            text,
            0,
            "the expression is too large once written in SQL (log, exp and sqrt name their "
            "argument twice, x ** k names x k times); simplify it or nest less",
        )
    return Parsed(text, tree)


def _measure(node: Expr) -> tuple[int, int]:
    """Return (depth, terms) of a tree: how deep its operators and functions nest, and how
    many terms its SQL has, as expression_sql writes it (counted generously)."""
    if isinstance(node, Name | Const):
        return 0, 1
    if isinstance(node, Seq | Map):
        parts = list(node.items) if isinstance(node, Seq) else [x for kv in node.pairs for x in kv]
        return 0, len(parts)
    if isinstance(node, Negate):
        depth, terms = _measure(node.operand)
        return depth + 1, terms
    if isinstance(node, Binary):
        (ld, lt), (rd, rt) = _measure(node.left), _measure(node.right)
        if node.op == "**":
            power = node.right.value if isinstance(node.right, Const) else 1
            copies = power if isinstance(power, int) and 1 <= power <= MAX_POWER else 1
            return max(ld, rd) + 1, copies * lt + rt
        # ':' of booleans names each side twice (NULL, then 1 or 0).
        return max(ld, rd) + 1, (2 if node.op == ":" else 1) * (lt + rt)
    assert isinstance(node, Call)
    measured = [_measure(a) for a in node.args]
    depth = max((d for d, _ in measured), default=0) + (3 if node.func in _GUARDED else 1)
    sizes = [t for _, t in measured]
    if node.func in _GUARDED:
        return depth, 2 * sum(sizes)
    if node.func in ("bands", "recode") and len(sizes) == 2:
        # The first argument is compared once per edge or pair (and is recode's ELSE).
        return depth, (sizes[1] + 1) * sizes[0] + sizes[1]
    return depth, sum(sizes)


def canonical(tree: Expr) -> str:
    """Return the one text of an expression: its name in parameters, results and memory."""
    if isinstance(tree, Name):
        return tree.name if is_plain_name(tree.name) else f"`{tree.name}`"
    if isinstance(tree, Const):
        return _const_text(tree.value)
    if isinstance(tree, Seq):
        return "[" + ", ".join(canonical(i) for i in tree.items) + "]"
    if isinstance(tree, Map):
        pairs = sorted(tree.pairs, key=lambda kv: canonical(kv[0]))
        return "{" + ", ".join(f"{canonical(k)}: {canonical(v)}" for k, v in pairs) + "}"
    if isinstance(tree, Call):
        return f"{tree.func}(" + ", ".join(canonical(a) for a in tree.args) + ")"
    if isinstance(tree, Negate):
        return "-" + _operand_text(tree.operand, _BINDING["*"] + 1)
    assert isinstance(tree, Binary)
    power = _BINDING[tree.op]
    # `**` binds to the right; the others to the left.
    left_min, right_min = (power + 1, power) if tree.op == "**" else (power, power + 1)
    left, right = _operand_text(tree.left, left_min), _operand_text(tree.right, right_min)
    return f"{left}:{right}" if tree.op == ":" else f"{left} {tree.op} {right}"


def _operand_text(node: Expr, minimum: int) -> str:
    text = canonical(node)
    if isinstance(node, Binary) and _BINDING[node.op] < minimum:
        return f"({text})"
    return text


def _const_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # As the tokenizer reads it back: no escapes, so the quote the string lacks.
        return f"'{value}'" if '"' in value else f'"{value}"'
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def normalise_column(value: Any, *, what: str) -> str:
    """Return a column reference in its one form: a plain name as it is, an expression as its
    canonical text. `what` names the parameter in errors. Raises InvalidRequest."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(
            f"{what} must be a column name or a derived variable such as log(x) "
            "(a non-empty string)"
        )
    text = value.strip()
    if not is_expression(text):
        if len(value) > MAX_NAME:
            raise InvalidRequest(f"{what}: column names are at most {MAX_NAME} characters")
        return value  # a column name, checked against the declared ones later
    try:
        parsed = parse_expression(text)
    except InvalidRequest as exc:
        raise InvalidRequest(f"{what}: {exc}") from None
    if isinstance(parsed.tree, Call) and parsed.tree.func == "C":
        raise InvalidRequest(
            f"{what}: C() marks a covariate as categorical; it is written only in covariates"
        )
    return canonical(parsed.tree)


def _tokenize(text: str) -> list[tuple[str, Any, int]]:
    tokens: list[tuple[str, Any, int]] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char in "\"'`":
            value, end = _quoted(text, pos)
            tokens.append(("name" if char == "`" else "string", value, pos))
            pos = end
            continue
        match = _TOKEN.match(text, pos)
        if match is None:
            hint = _HINTS.get(char, "expected a name, number, string, operator or bracket")
            raise _pointed(text, pos, f"unexpected character {char!r}; {hint}")
        kind, raw = match.lastgroup, match.group()
        if kind == "number":
            tokens.append(("number", _number(text, raw, pos), pos))
        elif kind == "name":
            tokens.append(("name", raw, pos))
        elif kind in ("op", "punct"):
            tokens.append((raw, raw, pos))
        pos = match.end()
    tokens.append(("end", None, len(text)))
    return tokens


def _number(text: str, raw: str, pos: int) -> int | float:
    """A number token's value: a whole number up to 2**53, or a finite double."""
    if not any(c in raw for c in ".eE"):
        if len(raw) <= 16 and int(raw) <= MAX_WHOLE:
            return int(raw)
        raise _pointed(
            text, pos, f"whole numbers are at most {MAX_WHOLE}; write larger ones as e.g. 1e20"
        )
    value = float(raw)
    if not math.isfinite(value):
        raise _pointed(text, pos, "this number is beyond the range of a double (about 1.8e308)")
    return value


def _quoted(text: str, start: int) -> tuple[str, int]:
    quote = text[start]
    end = text.find(quote, start + 1)
    if end < 0:
        what = "column name" if quote == "`" else "string"
        raise _pointed(text, start, f"this {what} is never closed; end it with {quote}")
    if quote != "`" and "\\" in text[start:end]:
        raise _pointed(text, start, "strings in expressions take no backslash escapes")
    value = text[start + 1 : end]
    # Control and invisible characters would reach the canonical text: logs, term names.
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in value):
        what = "column names" if quote == "`" else "strings"
        raise _pointed(text, start, f"{what} in expressions take no control characters")
    return value, end + 1


def _pointed(text: str, pos: int, message: str) -> InvalidRequest:
    start = max(0, pos - 40)
    prefix = "..." if start else ""
    shown = (prefix + text[start : pos + 40]).translate({ord(c): " " for c in "\t\r\n"})
    caret = " " * (len(prefix) + pos - start) + "^"
    return InvalidRequest(
        f"at position {pos + 1} of the expression: {message}\n  {shown}\n  {caret}"
    )


class _Parser:
    """Pratt parser: expr := prefix (infix expr)*, by binding power; `:` only at the top."""

    def __init__(self, text: str, tokens: list[tuple[str, Any, int]]) -> None:
        self.text = text
        self.tokens = tokens
        self.index = 0
        self.calls = 0  # depth of function calls: arithmetic needs at least one
        self.nodes = 0

    def parse(self) -> Expr:
        if self._kind() == "end":
            raise self._error("the expression is empty; write e.g. log(follow_up_days)")
        tree = self._expr(0)
        if self._kind() != "end":
            raise self._error(f"expected an operator or the end, found {self._describe()}")
        return tree

    def _expr(self, floor: int) -> Expr:
        left = self._prefix()
        while True:
            kind, _, pos = self.tokens[self.index]
            power = _BINDING.get(kind)
            if power is None or power <= floor:
                return left
            if kind == ":" and self.calls:
                raise self._error(
                    "':' (interaction) joins two variables at the top of an expression; "
                    "inside a function write the product with '*'"
                )
            if kind != ":" and not self.calls:
                what = "comparisons" if kind in COMPARE else "arithmetic"
                raise self._error(
                    f"{what} outside a function is a formula operator in statsmodels "
                    f"formulas; write it inside I(), e.g. I(x {kind} 2)"
                )
            self.index += 1
            self._count(pos)
            # `**` is right-associative: its right side may hold another `**`.
            right = self._expr(power - 1 if kind == "**" else power)
            if kind in COMPARE and isinstance(right, Binary) and right.op in COMPARE:
                raise self._error("comparisons do not chain; compare two values at a time")
            left = Binary(pos, kind, left, right)

    def _prefix(self) -> Expr:
        kind, value, pos = self.tokens[self.index]
        self._count(pos)
        if kind == "-":
            if not self.calls:
                raise self._error("a minus sign goes inside a function, e.g. I(-x)")
            self.index += 1
            operand = self._expr(_BINDING["*"])
            if isinstance(operand, Const) and not isinstance(operand.value, bool | str):
                return Const(pos, -operand.value)
            return Negate(pos, operand)
        if kind == "number":
            self.index += 1
            return Const(pos, value)
        if kind == "string":
            self.index += 1
            return Const(pos, value)
        if kind == "(":
            self.index += 1
            inner = self._expr(0)
            self._expect(")", f"to close the '(' at position {pos + 1}")
            return inner
        if kind == "[":
            return self._list()
        if kind == "{":
            return self._map()
        if kind == "name":
            self.index += 1
            if self._kind() == "(":
                return self._call(value, pos)
            if value in ("true", "True", "false", "False"):
                return Const(pos, value in ("true", "True"))
            return Name(pos, value)
        raise self._error(f"expected a column, value or function, found {self._describe()}")

    def _call(self, func: str, pos: int) -> Call:
        if func not in FUNCTIONS and func not in ("I", "C"):
            known = ", ".join((*FUNCTIONS, "I", "C"))
            raise _pointed(self.text, pos, f"unknown function {func!r}; the functions: {known}")
        self.index += 1  # the "("
        self.calls += 1
        args: list[Expr] = []
        if self._kind() != ")":
            args.append(self._expr(0))
            while self._kind() == ",":
                self.index += 1
                args.append(self._expr(0))
        self._expect(")", f"to close the call of {func}()")
        self.calls -= 1
        return Call(pos, func, tuple(args))

    def _list(self) -> Seq:
        pos = self.tokens[self.index][2]
        self.index += 1
        self.calls += 1  # a list holds values: a minus sign is a number's
        items = [self._expr(0)] if self._kind() != "]" else []
        while self._kind() == ",":
            self.index += 1
            items.append(self._expr(0))
        self._expect("]", "to close the list")
        self.calls -= 1
        return Seq(pos, tuple(items))

    def _map(self) -> Map:
        pos = self.tokens[self.index][2]
        self.index += 1
        self.calls += 1
        pairs: list[tuple[Expr, Expr]] = []
        while self._kind() != "}":
            key = self._prefix()
            self._expect(":", 'between a value and its new value, e.g. {"current": "ever"}')
            pairs.append((key, self._prefix()))
            if self._kind() != ",":
                break
            self.index += 1
        self._expect("}", "to close the mapping")
        self.calls -= 1
        return Map(pos, tuple(pairs))

    def _count(self, pos: int) -> None:
        self.nodes += 1
        if self.nodes > MAX_EXPRESSION_NODES or self.calls > 32:
            raise _pointed(self.text, pos, "the expression is too large or too deeply nested")

    def _expect(self, kind: str, why: str) -> None:
        if self._kind() != kind:
            raise self._error(f"expected '{kind}' {why}, found {self._describe()}")
        self.index += 1

    def _kind(self) -> str:
        return self.tokens[self.index][0]

    def _describe(self) -> str:
        kind, value, _ = self.tokens[self.index]
        if kind == "end":
            return "the end of the expression"
        if kind == "string":
            return f"the string {json.dumps(value)}"
        if kind == "name":
            return f"the name {value!r}"
        return repr(str(value))

    def _error(self, message: str) -> InvalidRequest:
        return _pointed(self.text, self.tokens[self.index][2], message)


# --------------------------------------------------------------------------- types


def features_of(tree: Expr) -> set[str]:
    """Return the functions and operator families an expression uses (for the TRE's policy)."""
    found: set[str] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, Call):
            if node.func in FUNCTIONS:
                found.add(node.func)
            stack.extend(node.args)
        elif isinstance(node, Binary):
            if node.op == ":":
                found.add("interaction")
            elif node.op in COMPARE:
                found.add("compare")
            else:
                found.add("arithmetic")
            stack += [node.left, node.right]
        elif isinstance(node, Negate):
            found.add("arithmetic")
            stack.append(node.operand)
    return found


def expression_type(parsed: Parsed, columns: Mapping[str, str], dataset: str) -> str:
    """Return the type ("float", "string", ...) of an expression over declared `columns`.

    Raises InvalidRequest pointing at the token whose column is undeclared or whose type
    does not fit its function.
    """
    return Typer(parsed, columns, dataset).type_of(parsed.tree)


class Typer:
    def __init__(self, parsed: Parsed, columns: Mapping[str, str], dataset: str) -> None:
        self.parsed = parsed
        self.columns = columns
        self.dataset = dataset

    def type_of(self, node: Expr) -> str:
        kind = self._type(node)
        if kind.startswith("const"):
            raise self.parsed.error(node, "the expression uses no column; name at least one")
        return kind

    def _type(self, node: Expr) -> str:
        err = self.parsed.error
        if isinstance(node, Name):
            ctype = self.columns.get(node.name)
            if ctype is None:
                declared = ", ".join(sorted(self.columns)) or "(none)"
                raise err(
                    node,
                    f"column {node.name!r} is not declared in dataset {self.dataset!r}; "
                    f"declared columns: {declared}",
                )
            return ctype
        if isinstance(node, Const):
            return "const " + _value_kind(node.value)
        if isinstance(node, Seq | Map):
            raise err(node, "a list or mapping is only an argument of bands() or recode()")
        if isinstance(node, Negate):
            self._numeric(node.operand, "a minus sign")
            return "float"
        if isinstance(node, Binary):
            return self._binary(node)
        assert isinstance(node, Call)
        return self._call(node)

    def _numeric(self, node: Expr, what: str, *, constant_ok: bool = True) -> str:
        kind = self._type(node)
        if kind in NUMERIC or (constant_ok and kind == "const number"):
            return kind
        raise self.parsed.error(node, f"{what} takes a number; {self._describe(node, kind)}")

    def _describe(self, node: Expr, kind: str) -> str:
        if isinstance(node, Name):
            return f"column {node.name!r} is {kind}"
        return f"this is {kind.removeprefix('const ')}"

    def _binary(self, node: Binary) -> str:
        err = self.parsed.error
        if node.op == ":":
            left, right = self._type(node.left), self._type(node.right)
            scalar = NUMERIC | {"boolean"}
            if left in scalar and right in scalar:
                return "float"
            if left == "string" and right == "string":
                return "string"
            raise err(
                node,
                "':' multiplies two numeric (or boolean) variables, or pairs the levels of two "
                f"string variables; here the sides are {left} and {right}",
            )
        if node.op == "**":
            self._numeric(node.left, "'**'")
            exponent = node.right
            if (
                not isinstance(exponent, Const)
                or not isinstance(exponent.value, int)
                or isinstance(exponent.value, bool)
                or not 1 <= exponent.value <= MAX_POWER
            ):
                raise err(exponent, f"the power after '**' is a whole number from 1 to {MAX_POWER}")
            return "float"
        if node.op in _ARITHMETIC:
            left = self._numeric(node.left, f"'{node.op}'")
            right = self._numeric(node.right, f"'{node.op}'")
            return "const number" if left == right == "const number" else "float"
        return self._comparison(node)

    def _comparison(self, node: Binary) -> str:
        left, right = self._type(node.left), self._type(node.right)
        if left.startswith("const") and right.startswith("const"):
            raise self.parsed.error(node, "the comparison uses no column; name at least one")
        kinds = {_kind_family(left), _kind_family(right)}
        ordering = node.op not in ("==", "!=")
        if len(kinds) != 1 or (ordering and kinds == {"boolean"}):
            raise self.parsed.error(
                node,
                f"'{node.op}' cannot compare {left.removeprefix('const ')} with "
                f"{right.removeprefix('const ')}; compare a column with a value of its kind "
                '(dates as "YYYY-MM-DD")',
            )
        for side, kind in ((node.left, left), (node.right, right)):
            if kind == "const string" and {left, right} & {"date"} and not _is_date(side):
                raise self.parsed.error(side, 'write dates as "YYYY-MM-DD"')
        return "boolean"

    def _call(self, node: Call) -> str:
        err = self.parsed.error
        arity = {"bands": 2, "recode": 2, "years_between": 2}.get(node.func, 1)
        if len(node.args) != arity:
            example = {
                "bands": "bands(age, [40, 50, 60])",
                "recode": 'recode(smoking, {"current": "ever"})',
                "years_between": 'years_between(birth_date, "2020-01-01")',
            }.get(node.func, f"{node.func}(x)")
            raise err(node, f"{node.func}() takes {arity} argument(s), e.g. {example}")
        if node.func == "C":
            raise err(
                node, "C() marks a covariate as categorical; it is written only in covariates"
            )
        if node.func == "I":
            return self._type(node.args[0])
        if node.func in ("log", "exp", "sqrt"):
            self._numeric(node.args[0], f"{node.func}()")
            return "float"
        if node.func == "years_between":
            for arg in node.args:
                kind = self._type(arg)
                if kind != "date" and not (kind == "const string" and _is_date(arg)):
                    raise err(arg, 'years_between() takes two dates: date columns or "YYYY-MM-DD"')
            return "float"
        if node.func == "bands":
            self._numeric(node.args[0], "bands()", constant_ok=False)
            _edges(self.parsed, node.args[1])
            return "string"
        return self._recode(node)

    def _recode(self, node: Call) -> str:
        err = self.parsed.error
        kind = self._type(node.args[0])
        if kind not in ("string", "integer", "boolean"):
            raise err(
                node.args[0], f"recode() takes a string, integer or boolean column; this is {kind}"
            )
        mapping = node.args[1]
        if not isinstance(mapping, Map) or not 1 <= len(mapping.pairs) <= MAX_RECODE:
            raise err(
                mapping,
                f"recode() takes a mapping of 1 to {MAX_RECODE} old values to new ones, "
                'e.g. {"current": "ever", "former": "ever"}',
            )
        family = "number" if kind == "integer" else kind
        seen: set[str] = set()
        for key, value in mapping.pairs:
            for part in (key, value):
                if not isinstance(part, Const) or _value_kind(part.value) != family:
                    raise err(part, f"the values of this recode are {kind}s, as its column is")
                if kind == "integer" and not isinstance(part.value, int):
                    raise err(part, "the values of this recode are whole numbers, as its column is")
            text = canonical(key)
            if text in seen:
                raise err(key, "this value is recoded twice")
            seen.add(text)
        return kind


def _value_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string"


def _kind_family(kind: str) -> str:
    kind = kind.removeprefix("const ")
    if kind in ("integer", "float", "number"):
        return "number"
    if kind in ("date", "string"):
        return "text"  # a date compares with a "YYYY-MM-DD" string
    return kind


def _is_date(node: Expr) -> bool:
    return (
        isinstance(node, Const)
        and isinstance(node.value, str)
        and parse_date(node.value) is not None
    )


def parse_date(text: str) -> dt.date | None:
    if not _ISO_DATE.fullmatch(text):
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


def _edges(parsed: Parsed, node: Expr) -> list[float]:
    if (
        not isinstance(node, Seq)
        or not 1 <= len(node.items) <= MAX_BANDS
        or not all(
            isinstance(i, Const) and _value_kind(i.value) == "number" and math.isfinite(i.value)
            for i in node.items
        )
    ):
        raise parsed.error(
            node, f"bands() takes a list of 1 to {MAX_BANDS} numbers, e.g. [40, 50, 60, 70]"
        )
    edges = [float(i.value) for i in node.items if isinstance(i, Const)]
    for item, before, after in zip(node.items[1:], edges, edges[1:], strict=False):
        if after <= before:
            raise parsed.error(item, "the edges of bands() must increase")
    return edges


def band_labels(edges: list[float]) -> list[str]:
    """Return the labels of the bands cut at `edges`: "(-inf, e0)", "[e0, e1)", ..., "[ek, inf)"."""
    shown = [_const_text(e) for e in edges]
    inner = [f"[{a}, {b})" for a, b in zip(shown, shown[1:], strict=False)]
    return [f"(-inf, {shown[0]})", *inner, f"[{shown[-1]}, inf)"]
