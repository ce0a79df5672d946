"""The template sandbox: what a campaign template may say, checked on its syntax tree before it ever runs.

Two lines of defence. First, ``check_template`` walks the parsed Jinja tree and refuses everything but
plain merge fields (``contact.<known field>``, ``workspace.name``, ``campaign.name``), literals, a short
list of filters and tests, ``if``, bounded ``for`` loops and simple ``set``. Second, the environment is
Jinja's ``ImmutableSandboxedEnvironment`` with no globals, intercepted arithmetic, size-checked filters
and a per-render budget of loop iterations and output characters (``RenderBudget``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

from babel.dates import format_date as babel_format_date
from jinja2 import Undefined, nodes
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS as JINJA_FILTERS
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from zgoda.core.errors import InvalidInput

MAX_RANGE = 100
MAX_LOOP_ITERATIONS = 1000
MAX_OUTPUT_CHARS = 1_000_000
MERGE_OBJECTS = ("contact", "workspace", "campaign")
LOOP_ATTRIBUTES = frozenset({"index", "index0", "revindex", "revindex0", "first", "last", "length"})
ALLOWED_TESTS = frozenset({"defined", "undefined", "none", "number", "string", "even", "odd"})
ALLOWED_FILTERS = (
    "default",
    "d",
    "upper",
    "lower",
    "title",
    "capitalize",
    "trim",
    "truncate",
    "replace",
    "escape",
    "e",
    "round",
    "int",
    "join",
    "length",
    "format_date",
)


class RenderLimitExceeded(InvalidInput):
    """A template hit a render-time limit (loop iterations or output size) for this contact's data."""


@dataclass
class RenderBudget:
    """Loop iterations one part of one render may still spend (reset for each part)."""

    iterations: int = MAX_LOOP_ITERATIONS
    part: str = "html"

    def tick(self) -> None:
        """Spend one loop iteration; raise once the render has looped more than the cap."""
        self.iterations -= 1
        if self.iterations < 0:
            raise RenderLimitExceeded(
                f"the template loops more than {MAX_LOOP_ITERATIONS} times in one message", field=self.part
            )

    def range(self, stop: int) -> Iterator[int]:
        """``range(stop)`` that spends the budget (the checker already holds ``stop`` to a literal ≤ 100)."""
        for number in range(min(int(stop), MAX_RANGE)):
            self.tick()
            yield number


class BudgetedList(list[object]):
    """A contact's list attribute: iterating it spends the render budget."""

    def __init__(self, items: Collection[object], budget: RenderBudget) -> None:
        super().__init__(items)
        self.budget = budget

    def __iter__(self) -> Iterator[object]:
        for item in list.__iter__(self):
            self.budget.tick()
            yield item


def _bounded_replace(eval_ctx: Any, value: Any, old: str, new: str, count: int | None = None) -> Any:
    """Jinja's ``replace``, refused before it runs when the result would pass the output cap."""
    text = str(value)
    old, new = str(old), str(new)
    occurrences = text.count(old) if count is None else min(text.count(old), int(count))
    if len(text) + occurrences * max(len(new) - len(old), 0) > MAX_OUTPUT_CHARS:
        raise RenderLimitExceeded(f"replace would make more than {MAX_OUTPUT_CHARS} characters")
    return JINJA_FILTERS["replace"](eval_ctx, value, old, new, count)


_bounded_replace.jinja_pass_arg = JINJA_FILTERS["replace"].jinja_pass_arg  # type: ignore[attr-defined]


def _format_date(value: Any, format: str = "medium", locale: str = "pl") -> str:
    """A date (or ISO date text) in the given Babel format and locale; anything unreadable is shown as is."""
    if isinstance(value, Undefined) or value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            value = dt.date.fromisoformat(value[:10])
        except ValueError:
            return str(value)
    if not isinstance(value, dt.date):
        return str(value)
    return str(babel_format_date(value, format=format, locale=locale))


class TemplateEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox: no globals, merge objects are plain dicts read by key, arithmetic beyond + and - refused."""

    intercepted_binops = frozenset({"*", "**", "%", "/", "//"})

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(autoescape=autoescape, auto_reload=False, cache_size=0, keep_trailing_newline=True)
        self.globals.clear()
        self.filters = {name: JINJA_FILTERS[name] for name in ALLOWED_FILTERS if name in JINJA_FILTERS}
        self.filters["replace"] = _bounded_replace
        self.filters["format_date"] = _format_date
        self.tests = {name: test for name, test in self.tests.items() if name in ALLOWED_TESTS}

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Merge objects are dicts: ``contact.items`` is the field "items", never the dict method."""
        if type(obj) is dict:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """Second line of defence: the checker already refuses these operators."""
        raise SecurityError(f"the operator {operator} is not allowed in templates")


@dataclass
class TemplateFacts:
    """What the checker learnt: the contact fields used, and the statement kinds seen."""

    contact_fields: set[str] = field(default_factory=set)
    uses_workspace: bool = False
    uses_campaign: bool = False


class _Checker:
    """Walks one parsed part and raises ``InvalidInput`` (naming the part and line) at the first refusal."""

    def __init__(self, part: str, allowed_fields: Collection[str], facts: TemplateFacts) -> None:
        self.part = part
        self.allowed_fields = frozenset(allowed_fields)
        self.facts = facts

    def fail(self, node: nodes.Node, message: str) -> InvalidInput:
        return InvalidInput(f"{self.part}, line {node.lineno}: {message}", field=self.part)

    # statements ---------------------------------------------------------------------------------

    def body(self, statements: list[nodes.Node], names: frozenset[str], set_names: set[str]) -> None:
        for statement in statements:
            self.statement(statement, names, set_names)

    def statement(self, node: nodes.Node, names: frozenset[str], set_names: set[str]) -> None:
        if isinstance(node, nodes.Output):
            for child in node.nodes:
                if not isinstance(child, nodes.TemplateData):
                    self.expr(child, names, set_names)
        elif isinstance(node, nodes.If):
            self.expr(node.test, names, set_names)
            self.body(node.body, names, set_names)
            for branch in node.elif_:
                self.statement(branch, names, set_names)
            self.body(node.else_, names, set_names)
        elif isinstance(node, nodes.For):
            self.for_loop(node, names, set_names)
        elif isinstance(node, nodes.Assign):
            target = node.target
            if not isinstance(target, nodes.Name) or target.name in (*MERGE_OBJECTS, "loop", "range"):
                raise self.fail(node, "set may only name one new variable (not contact, workspace, campaign or loop)")
            self.expr(node.node, names, set())  # a set value may not build on other set values: no doubling
            set_names.add(target.name)
        else:
            raise self.fail(node, f"{_describe(node)} is not allowed in campaign templates")

    def for_loop(self, node: nodes.For, names: frozenset[str], set_names: set[str]) -> None:
        if node.recursive:
            raise self.fail(node, "recursive loops are not allowed")
        target = node.target
        if not isinstance(target, nodes.Name) or target.name in (*MERGE_OBJECTS, "loop", "range"):
            raise self.fail(node, "a loop must name one new variable: {% for item in ... %}")
        source = node.iter
        if isinstance(source, nodes.Call):
            stop = source.args[0] if len(source.args) == 1 else None
            if not (
                isinstance(source.node, nodes.Name)
                and source.node.name == "range"
                and stop is not None
                and not source.kwargs
                and source.dyn_args is None
                and source.dyn_kwargs is None
                and isinstance(stop, nodes.Const)
                and type(stop.value) is int
                and 0 <= stop.value <= MAX_RANGE
            ):
                raise self.fail(node, f"loops may only use range(n) with a literal n from 0 to {MAX_RANGE}")
        elif self.contact_field(source) is None:
            raise self.fail(node, f"loops may only run over range(n ≤ {MAX_RANGE}) or a contact field")
        inner = names | {target.name, "loop"}
        if node.test is not None:
            self.expr(node.test, names | {target.name}, set_names)
        self.body(node.body, inner, set(set_names))
        self.body(node.else_, names, set(set_names))

    # expressions --------------------------------------------------------------------------------

    def contact_field(self, node: nodes.Node) -> str | None:
        """The field name when ``node`` is ``contact.x`` / ``contact['x']`` (checked against the known ones)."""
        key = _member_key(node)
        if key is None or key[0] != "contact":
            return None
        if key[1] not in self.allowed_fields:
            known = ", ".join(sorted(self.allowed_fields))
            raise self.fail(node, f"unknown merge field contact.{key[1]}; known: {known}")
        self.facts.contact_fields.add(key[1])
        return key[1]

    def expr(self, node: nodes.Node, names: frozenset[str], set_names: set[str]) -> None:
        if isinstance(node, nodes.Const):
            if node.value is not None and type(node.value) not in (str, int, float, bool):
                raise self.fail(node, "only text, number and true/false literals are allowed")
        elif isinstance(node, nodes.Name):
            if node.name in MERGE_OBJECTS:
                raise self.fail(node, f"use a field of {node.name}, e.g. {_example(node.name)}")
            if node.name == "loop" and "loop" in names:
                raise self.fail(node, "use loop.index, loop.first, loop.last and the like")
            if node.name not in names and node.name not in set_names:
                raise self.fail(
                    node, f"unknown variable {node.name}; use contact.<field>, workspace.name, campaign.name"
                )
        elif isinstance(node, nodes.Getattr | nodes.Getitem):
            self.member(node, names)
        elif isinstance(node, nodes.Filter):
            if node.name not in ALLOWED_FILTERS:
                raise self.fail(node, f"the filter {node.name} is not allowed; allowed: {', '.join(ALLOWED_FILTERS)}")
            self.arguments(node, names, set_names)
        elif isinstance(node, nodes.Test):
            if node.name not in ALLOWED_TESTS:
                raise self.fail(
                    node, f"the test {node.name} is not allowed; allowed: {', '.join(sorted(ALLOWED_TESTS))}"
                )
            self.arguments(node, names, set_names)
        elif isinstance(node, nodes.CondExpr):
            for child in (node.test, node.expr1, node.expr2):
                if child is not None:
                    self.expr(child, names, set_names)
        elif isinstance(node, nodes.And | nodes.Or | nodes.Add | nodes.Sub):
            self.expr(node.left, names, set_names)
            self.expr(node.right, names, set_names)
        elif isinstance(node, nodes.Not | nodes.Neg | nodes.Pos):
            self.expr(node.node, names, set_names)
        elif isinstance(node, nodes.Compare):
            self.expr(node.expr, names, set_names)
            for operand in node.ops:
                self.expr(operand.expr, names, set_names)
        elif isinstance(node, nodes.Concat):
            for child in node.nodes:
                self.expr(child, names, set_names)
        elif isinstance(node, nodes.List | nodes.Tuple):
            for child in node.items:
                self.expr(child, names, set_names)
        elif isinstance(node, nodes.Call):
            raise self.fail(node, "calling functions or methods is not allowed")
        elif isinstance(node, nodes.Mul | nodes.Pow | nodes.Mod | nodes.Div | nodes.FloorDiv):
            raise self.fail(node, "only + and - are allowed in templates")
        else:
            raise self.fail(node, f"{_describe(node)} is not allowed in campaign templates")

    def member(self, node: nodes.Getattr | nodes.Getitem, names: frozenset[str]) -> None:
        key = _member_key(node)
        if key is None:
            raise self.fail(
                node, "only contact.<field>, workspace.name, campaign.name and loop.<attribute> are allowed"
            )
        base, name = key
        if base == "contact":
            self.contact_field(node)
        elif base in ("workspace", "campaign"):
            if name != "name":
                raise self.fail(node, f"unknown merge field {base}.{name}; known: {base}.name")
            if base == "workspace":
                self.facts.uses_workspace = True
            else:
                self.facts.uses_campaign = True
        elif base == "loop" and "loop" in names:
            if name not in LOOP_ATTRIBUTES:
                raise self.fail(node, f"unknown loop attribute {name}; known: {', '.join(sorted(LOOP_ATTRIBUTES))}")
        else:
            raise self.fail(
                node, "only contact.<field>, workspace.name, campaign.name and loop.<attribute> are allowed"
            )

    def arguments(self, node: nodes.Filter | nodes.Test, names: frozenset[str], set_names: set[str]) -> None:
        if node.dyn_args is not None or node.dyn_kwargs is not None:
            raise self.fail(node, "* and ** arguments are not allowed")
        if node.node is not None:
            self.expr(node.node, names, set_names)
        for argument in node.args:
            self.expr(argument, names, set_names)
        for keyword in node.kwargs:
            self.expr(keyword.value, names, set_names)


def _member_key(node: nodes.Node) -> tuple[str, str] | None:
    """(object, name) for ``obj.name`` or ``obj['name']`` one level deep on a plain name, else None."""
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name):
        return node.node.name, node.attr
    if (
        isinstance(node, nodes.Getitem)
        and isinstance(node.node, nodes.Name)
        and isinstance(node.arg, nodes.Const)
        and isinstance(node.arg.value, str)
    ):
        return node.node.name, node.arg.value
    return None


_DESCRIPTIONS: dict[type[nodes.Node], str] = {
    nodes.Include: "{% include %}",
    nodes.Extends: "{% extends %}",
    nodes.Import: "{% import %}",
    nodes.FromImport: "{% from ... import %}",
    nodes.Macro: "{% macro %}",
    nodes.CallBlock: "{% call %}",
    nodes.Block: "{% block %}",
    nodes.FilterBlock: "{% filter %}",
    nodes.With: "{% with %}",
    nodes.AssignBlock: "{% set %}...{% endset %}",
    nodes.Slice: "slicing",
    nodes.Dict: "a dict literal",
}


def _describe(node: nodes.Node) -> str:
    return _DESCRIPTIONS.get(type(node), type(node).__name__)


def _example(name: str) -> str:
    return "{{ contact.first_name }}" if name == "contact" else "{{ " + name + ".name }}"


def check_template(part: str, tree: nodes.Template, allowed_fields: Collection[str], facts: TemplateFacts) -> None:
    """Refuse (InvalidInput naming ``part`` and the line) anything but the documented template language."""
    _Checker(part, allowed_fields, facts).body(tree.body, frozenset(), set())


def contact_value(value: object, budget: RenderBudget) -> object:
    """A contact field as a template sees it: scalars as they are, lists budgeted, anything else as text."""
    if value is None or isinstance(value, str | int | float | bool | dt.date):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return BudgetedList([contact_value(item, budget) for item in value], budget)
    return str(value)
