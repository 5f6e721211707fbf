"""A jinja sandbox that bounds the work a template can cause, not only what it can reach.

jinja's sandbox stops a template from reaching Python internals, but not from asking for a
billion characters (`{{ 'a'*10**9 }}`, `{{ 'x'|center(10**9) }}`, `'%999999999s'|format(1)`)
or a billion loop steps: one such template, saved by any key that may write templates, held
the whole process for half a minute and gigabytes of memory. Here every step that can make
text or loop is measured against a budget of the message being rendered, and refused before
the work is done when it would exceed it:

- no rendered part longer than its channel's limit (TEMPLATE_EMAIL_MAX_CHARS or
  TEMPLATE_SMS_MAX_CHARS); no value made on the way longer than TEMPLATE_EMAIL_MAX_CHARS, and
  no more than WORK_FACTOR times that made in all while rendering;
- no range longer than MAX_RANGE_ITEMS, no more than MAX_LOOP_ITERATIONS loop steps;
- no whole number longer than MAX_INT_BITS bits;
- no more than TEMPLATE_RENDER_SECONDS for the whole message, checked at every step.

A refusal is RenderLimitExceeded, naming the limit.
"""
from __future__ import annotations

import inspect
import re
import string
import time
from contextvars import ContextVar
from dataclasses import dataclass
from itertools import islice
from typing import Any, Callable, Iterable, Iterator, Mapping

from jinja2 import nodes, pass_context
from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter
from jinja2.runtime import Context, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import _PassArg
from jinja2.visitor import NodeTransformer

from shared.config import Config

MAX_RANGE_ITEMS = 10_000
MAX_LOOP_ITERATIONS = 100_000
MAX_INT_BITS = 10_000
WORK_FACTOR = 10  # characters made while rendering a part, as a multiple of its limit


@dataclass(frozen=True)
class RenderLimits:
    """The documented limits of one rendered message (settings TEMPLATE_*)."""

    email_max_chars: int = 200_000
    sms_max_chars: int = 1600
    max_seconds: float = 1.0

    @classmethod
    def from_config(cls, config: Config) -> "RenderLimits":
        return cls(email_max_chars=config.int("TEMPLATE_EMAIL_MAX_CHARS"),
                   sms_max_chars=config.int("TEMPLATE_SMS_MAX_CHARS"),
                   max_seconds=config.float("TEMPLATE_RENDER_SECONDS"))

    def budget(self, channel: str, started: float | None = None) -> "RenderBudget":
        """A part's budget; parts of one message share `started`, so its time is the whole's.
        Values made on the way are bounded by the email limit on both channels (an SMS may
        truncate a longer text); what a part renders to, by its channel's."""
        output = ((self.sms_max_chars, "TEMPLATE_SMS_MAX_CHARS") if channel == "sms"
                  else (self.email_max_chars, "TEMPLATE_EMAIL_MAX_CHARS"))
        return RenderBudget(self.email_max_chars, "TEMPLATE_EMAIL_MAX_CHARS", self.max_seconds,
                            (time.monotonic() if started is None else started) + self.max_seconds,
                            output)


class RenderLimitExceeded(SecurityError):
    """A template asked for more work than a limit allows; `limit` names the limit."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


class RenderBudget:
    """What one part may still make; every guarded step charges it."""

    def __init__(self, max_chars: int, limit_name: str, seconds: float, deadline: float,
                 output: tuple[int, str] | None = None) -> None:
        self.max_chars = max_chars
        self.limit_name = limit_name
        self.output_chars, self.output_limit = output or (max_chars, limit_name)
        self.seconds = seconds
        self.deadline = deadline
        self.made = 0
        self.iterations = 0

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise RenderLimitExceeded(
                f"rendering takes longer than TEMPLATE_RENDER_SECONDS ({self.seconds:g} s)",
                "TEMPLATE_RENDER_SECONDS")

    def allow(self, size: int, what: str = "a value") -> None:
        """Refuse, before it is made, `what` of `size` characters (or items)."""
        if size > self.max_chars:
            raise RenderLimitExceeded(
                f"{what} would be longer than {self.limit_name} ({self.max_chars} characters)",
                self.limit_name)

    def charge(self, value: Any) -> Any:
        """Count a value just made against the part's limits; answers the value."""
        self.tick()
        if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)):
            size = weight(value, self.max_chars)
            self.allow(size)
            self.made += size
            if self.made > WORK_FACTOR * self.max_chars:
                raise RenderLimitExceeded(
                    f"the template makes more than {WORK_FACTOR} times {self.limit_name} "
                    f"({self.max_chars} characters) of text while rendering", self.limit_name)
        return value

    def step(self) -> None:
        self.iterations += 1
        if self.iterations > MAX_LOOP_ITERATIONS:
            raise RenderLimitExceeded(f"loops take more than MAX_LOOP_ITERATIONS "
                                      f"({MAX_LOOP_ITERATIONS}) steps",
                                      "MAX_LOOP_ITERATIONS")
        if not self.iterations % 256:
            self.tick()


def weight(value: Any, cap: int) -> int:
    """About how many characters `value` makes as text, counted until past `cap`: a list of
    one long text repeated is as long as the text it prints."""
    total, pending = 0, [value]
    while pending and total <= cap:
        item = pending.pop()
        if isinstance(item, (str, bytes)):
            total += len(item)
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += 2 + len(item)
            pending.extend(islice(item, max(cap - total + 1, 0)))
        elif isinstance(item, dict):
            total += 2 + 2 * len(item)
            for key, val in islice(item.items(), max(cap - total + 1, 0)):
                pending += (key, val)
        elif isinstance(item, int) and not isinstance(item, bool):
            total += item.bit_length() // 3 + 1
        else:
            total += 1
    return total


_BUDGET: ContextVar[RenderBudget | None] = ContextVar("template_render_budget", default=None)


def _budget() -> RenderBudget:
    """The budget of the render under way; outside one (jinja folding constants while
    compiling) a fresh default, so the size limits hold there too."""
    return _BUDGET.get() or RenderLimits().budget("email")


def render_within(template: Any, context: Mapping[str, Any], budget: RenderBudget) -> str:
    """Render a template of a BoundedSandbox within `budget`."""
    token = _BUDGET.set(budget)
    try:
        rendered = template.render(**context)
    finally:
        _BUDGET.reset(token)
    if len(rendered) > budget.output_chars:
        raise RenderLimitExceeded(f"the rendered text would be longer than {budget.output_limit} "
                                  f"({budget.output_chars} characters)", budget.output_limit)
    return rendered


# -- the checks ----------------------------------------------------------------------------------

_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_printf(budget: RenderBudget, fmt: Any) -> None:
    """`'%999999999s' % x` pads to the width: refuse widths and precisions over the limit."""
    if not isinstance(fmt, (str, bytes)):
        return
    text = fmt.decode("latin-1") if isinstance(fmt, bytes) else fmt
    for width, precision in _PRINTF.findall(text):
        for number in (width, precision):
            if number == "*":
                raise RenderLimitExceeded("a '*' width in a format is not allowed", budget.limit_name)
            if number:
                budget.allow(int(number), "a formatted field")


def _check_format_spec(budget: RenderBudget, fmt: str) -> None:
    """`'{:>999999999}'.format(x)` likewise; a width taken from an argument is refused."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format will refuse it itself
    for _, _, spec, _ in fields:
        if not spec:
            continue
        if "{" in spec:
            raise RenderLimitExceeded("a nested field in a format spec is not allowed",
                                      budget.limit_name)
        for number in re.findall(r"\d+", spec):
            budget.allow(int(number), "a formatted field")


def _check_int(budget: RenderBudget, bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise RenderLimitExceeded(
            f"a number would be longer than MAX_INT_BITS ({MAX_INT_BITS} bits)", "MAX_INT_BITS")


def _take(budget: RenderBudget, iterable: Iterable[Any]) -> list[Any]:
    """Materialise an iterable a step will consume whole, at most the part's limit of items."""
    items: list[Any] = []
    for item in iterable:
        items.append(item)
        if len(items) % 1024 == 0:
            budget.allow(len(items), "a sequence")
            budget.tick()
    budget.allow(len(items), "a sequence")
    return items


def _join_size(separator: Any, items: list[Any], cap: int) -> int:
    return weight(items, cap) + weight(separator, cap) * max(len(items) - 1, 0)


def _replaced_size(s: str, old: str, new: str, count: int | None) -> int:
    found = s.count(old) if old else len(s) + 1
    if count is not None and count >= 0:
        found = min(found, count)
    return len(s) + found * max(len(new) - len(old), 0)


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (str, bytes, list, tuple))


def _is_int(value: Any) -> bool:
    return isinstance(value, int)


# -- binary operators ----------------------------------------------------------------------------

def _check_binop(budget: RenderBudget, operator: str, left: Any, right: Any) -> None:
    if operator == "*":
        if _is_sequence(left) and _is_int(right):
            budget.allow(weight(left, budget.max_chars) * max(right, 0), "a repeated value")
        elif _is_int(left) and _is_sequence(right):
            budget.allow(weight(right, budget.max_chars) * max(left, 0), "a repeated value")
        elif _is_int(left) and _is_int(right):
            _check_int(budget, abs(left).bit_length() + abs(right).bit_length())
    elif operator == "**":
        if _is_int(left) and _is_int(right) and right > 0:
            _check_int(budget, max(abs(left).bit_length() - 1, 1) * right)
    elif operator == "%":
        _check_printf(budget, left)


# -- method calls --------------------------------------------------------------------------------

def _method_target(obj: Any) -> tuple[Any, str]:
    """The object a bound method belongs to and the method's name (through the sandbox's
    wrapper of str.format)."""
    method = getattr(obj, "__wrapped__", obj)
    return getattr(method, "__self__", None), getattr(method, "__name__", "")


def _check_call(budget: RenderBudget, obj: Any, args: tuple, kwargs: dict) -> tuple:
    """Refuse a method call whose result would be over the limit; answers the arguments to
    call with (an iterable `join` consumes is materialised once, here)."""
    owner, name = _method_target(obj)
    if isinstance(owner, (str, bytes, int)) and not isinstance(owner, bool):
        for value in (*args, *kwargs.values()):
            if _is_int(value) and not isinstance(value, bool):
                budget.allow(value, f"the result of {name}()")
    if not isinstance(owner, (str, bytes)):
        return args
    if name == "join" and args:
        items = _take(budget, args[0])
        budget.allow(_join_size(owner, items, budget.max_chars), "a joined text")
        return (items, *args[1:])
    if name == "replace" and len(args) >= 2:
        count = args[2] if len(args) > 2 else kwargs.get("count")
        budget.allow(_replaced_size(owner, args[0], args[1], count), "a replaced text")
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        budget.allow(len(owner) + owner.count("\t" if isinstance(owner, str) else b"\t") * size,
                     "an expanded text")
    elif name in ("format", "format_map") and isinstance(owner, str):
        _check_format_spec(budget, owner)
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, (str, bytes))), default=1)
        budget.allow(len(owner) * longest, "a translated text")
    return args


# -- filters -------------------------------------------------------------------------------------

_PRECHECKED_FILTERS = frozenset({"center", "batch", "slice", "indent", "format", "replace",
                                 "wordwrap", "urlize", "tojson", "sum"})


def _filter_check(budget: RenderBudget, name: str, value: Any, arguments: Mapping[str, Any]) -> None:
    """Pre-checks of the built-in filters that can make far more than they are given."""
    if name in ("center", "batch", "slice"):
        amount = arguments.get({"center": "width", "batch": "linecount", "slice": "slices"}[name])
        if _is_int(amount):
            budget.allow(amount, f"the result of |{name}")
    elif name == "indent":
        width = arguments.get("width", 4)
        pad = len(width) if isinstance(width, str) else width if _is_int(width) else 0
        text = str(value)
        budget.allow(len(text) + (text.count("\n") + 1) * pad, "an indented text")
    elif name == "format":
        _check_printf(budget, str(value))
    elif name == "replace":
        old, new = arguments.get("old"), arguments.get("new")
        if old is not None and new is not None:
            budget.allow(_replaced_size(str(value), str(old), str(new), arguments.get("count")),
                         "a replaced text")
    elif name == "wordwrap":
        wrap = arguments.get("wrapstring")
        if wrap:
            budget.allow(len(str(value)) * (1 + len(str(wrap))), "a wrapped text")
    elif name == "urlize":
        extra = sum(len(str(arguments.get(k) or "")) for k in ("target", "rel"))
        if extra:
            budget.allow(len(str(value)) * (1 + extra), "a linked text")
    elif name == "tojson":
        indent = arguments.get("indent")
        if _is_int(indent):
            budget.allow(indent, "a JSON indent")
    elif name == "sum":
        start = arguments.get("start", 0)
        if not isinstance(start, (int, float)):
            raise SecurityError("|sum adds numbers only")


def _bounded_filter(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """The filter, checked before it runs and charged for what it makes. Taking the context
    also keeps jinja from running it while compiling, outside any budget."""
    pass_arg = _PassArg.from_obj(original)
    signature = inspect.signature(original)
    # jinja's async-aware filters take the eval context but show the plain function's signature
    named_lead = pass_arg is not None and next(iter(signature.parameters), "") in (
        "eval_ctx", "environment", "env", "context")

    @pass_context
    def bounded(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        first = {_PassArg.context: context, _PassArg.eval_context: context.eval_ctx,
                 _PassArg.environment: context.environment}.get(pass_arg) if pass_arg else None
        lead = (first,) if pass_arg else ()
        if name == "join":
            value = _take(budget, value)
            attribute = args[1] if len(args) > 1 else kwargs.pop("attribute", None)
            if attribute is not None:
                value = list(map(make_attrgetter(context.environment, attribute), value))
                args = args[:1]
            separator = args[0] if args else kwargs.get("d", "")
            budget.allow(_join_size(separator, value, budget.max_chars), "a joined text")
        if name in _PRECHECKED_FILTERS:
            try:
                arguments = signature.bind(*(lead if named_lead else ()), value, *args,
                                           **kwargs).arguments
            except TypeError:
                arguments = {}
            _filter_check(budget, name, value, arguments)
        return budget.charge(original(*lead, value, *args, **kwargs))

    return bounded


@pass_context
def _loop_guard(context: Context, iterable: Any) -> Iterator[Any]:
    """Every loop runs through this (see BoundedSandbox.guard): each step is counted."""
    budget = _budget()
    for item in iterable:
        budget.step()
        yield item


@pass_context
def _concat_guard(context: Context, parts: list[Any]) -> str:
    """`a ~ b ~ ...`: refused before joining when the result would be over the limit."""
    budget = _budget()
    budget.allow(weight(parts, budget.max_chars), "a joined text")
    join = markup_join if context.eval_ctx.autoescape else str_join
    return budget.charge(join(parts))


def _guarded(node: nodes.Expr, guard: str) -> nodes.Filter:
    return nodes.Filter(node, guard, [], [], None, None, lineno=node.lineno)


class _Guards(NodeTransformer):
    """Routes through the guards what jinja builds without calling the environment: a loop's
    steps, `a ~ b`, and list, tuple and dict literals (`[a, a, a]` of a long `a` is long)."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        node = self.generic_visit(node)
        node.iter = _guarded(node.iter, "_loop_guard")
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        node = self.generic_visit(node)
        return _guarded(nodes.List(node.nodes, lineno=node.lineno), "_concat_guard")

    def _literal(self, node: nodes.Expr) -> nodes.Node:
        node = self.generic_visit(node)
        return _guarded(node, "_value_guard")

    visit_List = visit_Dict = _literal

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        return self._literal(node) if node.ctx == "load" else self.generic_visit(node)


@pass_context
def _value_guard(context: Context, value: Any) -> Any:
    return _budget().charge(value)


def bounded_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE_ITEMS:
        raise RenderLimitExceeded(
            f"range() of more than MAX_RANGE_ITEMS ({MAX_RANGE_ITEMS}) numbers", "MAX_RANGE_ITEMS")
    return numbers


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox every template of the service renders in (see the module's docstring).
    Immutable: `list.append` in a loop could grow a value no step is charged for."""

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=self._charge_output, **options)
        self.globals.pop("lipsum", None)  # lipsum(10**9) writes paragraphs until memory ends
        self.globals["range"] = bounded_range
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}
        self.filters["_loop_guard"] = _loop_guard
        self.filters["_concat_guard"] = _concat_guard
        self.filters["_value_guard"] = _value_guard

    @staticmethod
    def _charge_output(value: Any) -> Any:
        """Every `{{ }}` is counted as it is written, macros' and blocks' included."""
        budget = _budget()
        budget.tick()
        budget.made += weight(value, budget.max_chars) if value is not None else 0
        return value

    def compile_bounded(self, source: str) -> Any:
        """Compile `source` with every loop and `~` routed through the guards."""
        tree = self.parse(source)
        self.guard(tree)
        return self.from_string(tree)

    @staticmethod
    def guard(tree: nodes.Template) -> None:
        _Guards().visit(tree)

    def concat(self, parts: Iterable[str]) -> str:  # type: ignore[override]
        """How jinja joins a template's, a macro's or a block's output: counted as it comes."""
        budget = _budget()
        buffer, size = [], 0
        for part in parts:
            size += len(part)
            budget.allow(size, "the rendered text")
            buffer.append(part)
        budget.charge("")
        budget.made += size
        return "".join(buffer)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = _budget()
        budget.tick()
        _check_binop(budget, operator, left, right)
        return budget.charge(self.binop_table[operator](left, right))

    def getitem(self, obj: Any, argument: Any) -> Any:
        """A slice is a new value; an item is one that exists."""
        found = super().getitem(obj, argument)
        return _budget().charge(found) if isinstance(argument, slice) else found

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        args = _check_call(budget, __obj, args, kwargs)
        return budget.charge(super().call(__context, __obj, *args, **kwargs))
