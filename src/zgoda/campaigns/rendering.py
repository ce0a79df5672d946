"""Campaign templates: compiled once per campaign (checked, CSS inlined), rendered per contact.

``compile_template`` checks the three parts (subject, html, text) against the sandbox rules of
``sandbox.check_template`` and prepares the html once:

- Fast path (most templates). Every Jinja construct of the html is replaced by an unguessable comment
  placeholder, the skeleton goes through css_inline (HTML5 parse, CSS inlined, ``<style>`` removed) and
  ``htmlsafe.Sanitiser`` (balanced, footer slot last), and the constructs are put back. The result is
  accepted only when every placeholder came through once, in order, and each ``if``/``for`` block opens,
  branches and closes among the same open elements: then every rendered variant is balanced HTML whose
  last thing is the footer slot, and a message costs one Jinja render and a string replace. The text
  part, when not given, is derived the same way from the skeleton (``htmltext``) into a text template.
- Slow path (templates the proof does not cover: Jinja inside ``<style>``, inside a tag or an Outlook
  conditional comment, blocks that straddle elements, CSS whose result depends on the rendered
  structure such as ``:nth-child``, ``+``/``~`` or attribute selectors next to personalised attributes).
  Each message is rendered, then CSS-inlined, sanitised and converted to text on its own: the same
  result, about ten times slower.

``CompiledTemplate.render`` returns ``RenderedParts``; given a ``FooterContext`` it also attaches the
platform's footer to both parts (``RenderedParts.footer_attached``), which ``message.compose_message``
insists on.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import css_inline
from jinja2 import Template, TemplateError, TemplateSyntaxError, nodes

from zgoda.campaigns import footer as footer_module
from zgoda.campaigns.htmlsafe import Sanitiser, normalise_html5
from zgoda.campaigns.htmltext import TextConverter, html_to_text, tidy_text
from zgoda.campaigns.sandbox import (
    MAX_LOOP_ITERATIONS,
    MAX_OUTPUT_CHARS,
    RenderBudget,
    RenderLimitExceeded,
    TemplateEnvironment,
    TemplateFacts,
    check_template,
    contact_value,
)
from zgoda.core.errors import InvalidInput

MAX_SUBJECT_SOURCE = 2_000
MAX_BODY_SOURCE = 1_000_000
_HTML_ENV = TemplateEnvironment(autoescape=True)
_TEXT_ENV = TemplateEnvironment(autoescape=False)
_INLINER = css_inline.CSSInliner(
    inline_style_tags=True,
    keep_style_tags=False,
    keep_link_tags=False,
    keep_at_rules=False,
    load_remote_stylesheets=False,
)
_STYLE_BLOCK = re.compile(r"<style\b[^>]*>(.*?)</style", re.IGNORECASE | re.DOTALL)
# Selectors whose matches depend on siblings, position or attribute values: inlining them on the template
# could differ from inlining them on a rendered message.
_STRUCTURAL_CSS = re.compile(r":(?:nth-|first-|last-|only-|empty|has\b|not\b)|[+~\[]", re.IGNORECASE)
_OPENERS = re.compile(r"\{(?=[{%#])")
_WHITESPACE_AND_CONTROLS = re.compile(r"[\s\x00-\x1f\x7f\u2028\u2029\x85]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")


@dataclass(frozen=True)
class RenderedParts:
    """One message's subject (one line), html and text; ``footer_attached`` once the platform footer is in."""

    subject: str
    html: str
    text: str
    footer_attached: bool = False


@dataclass(frozen=True)
class _Construct:
    source: str
    kind: str  # "expr", "open", "mid", "close", "stmt"
    block: int  # the index of the block's opening construct; -1 for expr/stmt


@dataclass(frozen=True)
class _Part:
    template: Template
    name: str

    def render(self, variables: dict[str, object], budget: RenderBudget) -> str:
        budget.part = self.name
        budget.iterations = MAX_LOOP_ITERATIONS  # the cap is per part: html and its derived text loop alike
        chunks: list[str] = []
        size = 0
        try:
            for chunk in self.template.generate(variables):
                size += len(chunk)
                if size > MAX_OUTPUT_CHARS:
                    raise RenderLimitExceeded(
                        f"{self.name}: the message would be longer than {MAX_OUTPUT_CHARS} characters",
                        field=self.name,
                    )
                chunks.append(chunk)
        except RenderLimitExceeded as error:
            raise RenderLimitExceeded(error.detail, field=self.name) from None
        except (TemplateError, TypeError, ValueError, ArithmeticError) as error:
            raise InvalidInput(f"{self.name}: cannot render for this contact: {error}", field=self.name) from None
        return "".join(chunks)


class CompiledTemplate:
    """A checked campaign template, ready to render for any number of contacts (thread-safe)."""

    def __init__(
        self,
        *,
        subject: _Part,
        html: _Part,
        text: _Part | None,
        facts: TemplateFacts,
        slot: str,
        fast_html: bool,
        derived_text: bool,
    ) -> None:
        self._subject = subject
        self._html = html
        self._text = text
        self._facts = facts
        self._fields = tuple(sorted(facts.contact_fields))
        self._slot = slot
        self.fast_html = fast_html
        """True when the html was CSS-inlined and proven balanced at compile time (one render per message)."""
        self.derived_text = derived_text
        """True when the text part was derived from the html once, at compile time."""

    @property
    def contact_fields(self) -> frozenset[str]:
        """The contact fields the template reads (the sending loop need load no others)."""
        return frozenset(self._fields)

    def render(
        self,
        *,
        contact: Mapping[str, object],
        workspace_name: str,
        campaign_name: str,
        footer: footer_module.FooterContext | None = None,
    ) -> RenderedParts:
        """Render the message for one contact; with ``footer`` the platform footer is attached to both parts.

        A field the template knows but this contact lacks (or holds None) renders empty, so ``default``
        works. Raises ``InvalidInput`` (``RenderLimitExceeded``) naming the part when a limit is hit.
        """
        budget = RenderBudget()
        fields: dict[str, object] = {}
        for name in self._fields:
            value = contact.get(name)
            if value is not None:
                fields[name] = contact_value(value, budget)
        variables: dict[str, object] = {
            "contact": fields,
            "workspace": {"name": workspace_name},
            "campaign": {"name": campaign_name},
            "range": budget.range,
        }
        subject = one_line(self._subject.render(variables, budget))
        html = self._html.render(variables, budget)
        if not self.fast_html:
            html = _sanitised(_inline_css(html), self._slot)
        if self._text is not None:
            text = self._text.render(variables, budget)
            if self.derived_text:
                text = _tidy_rendered_text(text)
        else:
            text = html_to_text(html)
        if footer is None:
            return RenderedParts(subject=subject, html=html.replace(self._slot, ""), text=text)
        before, slot, after = html.rpartition(self._slot)
        if not slot:  # cannot happen: the slot is literal template text that no expression can write
            raise InvalidInput("html: the footer slot is missing", field="html")
        return RenderedParts(
            subject=subject,
            html=before + footer_module.footer_html(footer) + after,
            text=footer_module.attach_footer_text(text, footer_module.footer_text(footer)),
            footer_attached=True,
        )


def one_line(text: str) -> str:
    """Whitespace (line breaks included) and control characters collapsed to single spaces: a safe header."""
    return _WHITESPACE_AND_CONTROLS.sub(" ", text).strip()


def compile_template(*, subject: str, html: str, text: str | None, allowed_fields: Collection[str]) -> CompiledTemplate:
    """Check and prepare a campaign template once; ``InvalidInput`` names the part (subject/html/text) and line.

    ``allowed_fields`` are the contact keys a template may use (``email``, ``phone`` and the workspace's
    attribute keys); anything else, and every construct outside the sandbox rules, is refused here.
    """
    facts = TemplateFacts()
    subject_tree = _parse("subject", subject, _TEXT_ENV, allowed_fields, facts, MAX_SUBJECT_SOURCE)
    if not subject.strip():
        raise InvalidInput("subject: the subject is empty", field="subject")
    html_tree = _parse("html", html, _HTML_ENV, allowed_fields, facts, MAX_BODY_SOURCE)
    text_part = None
    if text is not None and text.strip():
        text_tree = _parse("text", text, _TEXT_ENV, allowed_fields, facts, MAX_BODY_SOURCE)
        text_part = _Part(_TEXT_ENV.from_string(text_tree), "text")
    subject_part = _Part(_TEXT_ENV.from_string(subject_tree), "subject")
    nonce = secrets.token_hex(8)
    slot = f"<!--zgoda-footer-{nonce}-->"
    prepared = _prepare_html(html, nonce, slot, allowed_fields)
    derived_text = False
    if prepared is not None:
        html_part, text_source = prepared
        if text_part is None and text_source is not None:
            derived = _checked_tree("text", text_source, _TEXT_ENV, allowed_fields)
            if derived is not None:
                text_part = _Part(_TEXT_ENV.from_string(derived), "text")
                derived_text = True
    else:
        html_part = _Part(_HTML_ENV.from_string(html_tree), "html")
    return CompiledTemplate(
        subject=subject_part,
        html=html_part,
        text=text_part,
        facts=facts,
        slot=slot,
        fast_html=prepared is not None,
        derived_text=derived_text,
    )


# --- compile-time helpers ----------------------------------------------------------------------------


def _parse(
    part: str,
    source: str,
    env: TemplateEnvironment,
    allowed_fields: Collection[str],
    facts: TemplateFacts,
    limit: int,
) -> nodes.Template:
    if len(source) > limit:
        raise InvalidInput(f"{part}: longer than {limit} characters", field=part)
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as error:
        raise InvalidInput(f"{part}, line {error.lineno}: {error.message}", field=part) from None
    check_template(part, tree, allowed_fields, facts)
    return tree


def _checked_tree(
    part: str, source: str, env: TemplateEnvironment, allowed_fields: Collection[str]
) -> nodes.Template | None:
    """A source the compiler itself built, parsed and checked again (None if that fails: use the slow path)."""
    try:
        return _parse(part, source, env, allowed_fields, TemplateFacts(), 10 * MAX_BODY_SOURCE)
    except InvalidInput:
        return None


def _split_constructs(source: str, nonce: str) -> tuple[str, list[_Construct]]:
    """The html with every Jinja construct replaced by ``<!--zgoda-NONCE-N-->``, and the constructs."""
    pieces: list[str] = []
    constructs: list[_Construct] = []
    open_blocks: list[int] = []
    current: list[str] = []
    keyword = ""
    state = "data"
    for _, lexeme, value in _HTML_ENV.lexer.tokeniter(source, None):
        if state == "data":
            if lexeme == "data":
                pieces.append(value)
            elif lexeme in ("variable_begin", "block_begin"):
                state, current, keyword = lexeme, [value], ""
            elif lexeme == "comment_begin":
                state = "comment"
            # raw_begin / raw_end: the raw text in between arrives as plain data
        elif state == "comment":
            if lexeme == "comment_end":
                state = "data"
        else:
            current.append(value)
            if lexeme == "name" and not keyword and state == "block_begin":
                keyword = value
            if lexeme in ("variable_end", "block_end"):
                index = len(constructs)
                kind, block = "expr", -1
                if state == "block_begin":
                    if keyword in ("if", "for"):
                        kind, block = "open", index
                        open_blocks.append(index)
                    elif keyword in ("elif", "else") and open_blocks:
                        kind, block = "mid", open_blocks[-1]
                    elif keyword in ("endif", "endfor") and open_blocks:
                        kind, block = "close", open_blocks.pop()
                    else:
                        kind = "stmt"
                constructs.append(_Construct("".join(current), kind, block))
                pieces.append(f"<!--zgoda-{nonce}-{index}-->")
                state = "data"
    return "".join(pieces), constructs


def _block_paths(sequence: Sequence[int], constructs: Sequence[_Construct]) -> list[tuple[int, ...]] | None:
    """For each occurrence, the chain of enclosing block branches; None if the blocks do not nest properly."""
    stack: list[int] = []
    paths: list[tuple[int, ...]] = []
    for index in sequence:
        construct = constructs[index]
        if construct.kind in ("mid", "close"):
            if not stack or constructs[stack[-1]].block != construct.block:
                return None
            stack.pop()
        paths.append(tuple(stack))
        if construct.kind in ("open", "mid"):
            stack.append(index)
    return paths if not stack else None


def _same_structure(found: Sequence[int], constructs: Sequence[_Construct], *, complete: bool) -> bool:
    """Whether ``found`` (placeholders in output order) keeps the template's control flow intact.

    Every block must appear whole or not at all, blocks and statements in source order, and each
    construct inside the same block branches as in the source. ``complete`` also demands every construct.
    """
    expected = _block_paths(range(len(constructs)), constructs)
    actual = _block_paths(found, constructs)
    if expected is None or actual is None:
        return False
    if complete and sorted(found) != list(range(len(constructs))):
        return False
    control = [index for index in found if constructs[index].kind != "expr"]
    if control != sorted(control) or len(set(control)) != len(control):
        return False
    kept_blocks = {constructs[index].block for index in control if constructs[index].kind != "stmt"}
    needed = [i for i, c in enumerate(constructs) if c.kind != "expr" and c.kind != "stmt" and c.block in kept_blocks]
    if [index for index in control if constructs[index].kind != "stmt"] != needed:
        return False
    return all(actual[position] == expected[index] for position, index in enumerate(found))


def _prepare_html(html: str, nonce: str, slot: str, allowed_fields: Collection[str]) -> tuple[_Part, str | None] | None:
    """The fast path: the html template inlined and sanitised once (and its derived text source), or None."""
    skeleton, constructs = _split_constructs(html, nonce)
    if any("<!--zgoda-" in construct.source for construct in constructs):
        return None
    styles = " ".join(_STYLE_BLOCK.findall(skeleton))
    if f"zgoda-{nonce}" in styles:
        return None  # Jinja inside <style>: the CSS must be inlined per message
    structural_css = bool(_STRUCTURAL_CSS.search(styles))
    try:
        inlined = _INLINER.inline(skeleton)
    except css_inline.InlineError:
        return None
    placeholder = re.compile(f"<!--zgoda-{nonce}-([0-9]+)-->")
    sanitiser = Sanitiser(slot=slot, placeholder=placeholder, constructs=[c.source for c in constructs])
    sanitiser.feed(inlined)
    source = sanitiser.finish()
    found = sanitiser.found
    if not _same_structure(found.order, constructs, complete=True):
        return None
    for index, construct in enumerate(constructs):
        if construct.kind in ("mid", "close") and found.contexts[index] != found.contexts[construct.block]:
            return None
        if structural_css and (construct.kind != "expr" or found.contexts[index][0] == "attr"):
            return None  # loops, branches or personalised attributes could change what those selectors match
    tree = _checked_tree("html", source, _HTML_ENV, allowed_fields)
    if tree is None:
        return None
    html_part = _Part(_HTML_ENV.from_string(tree), "html")
    return html_part, _derive_text_source(inlined, nonce, placeholder, constructs)


def _derive_text_source(
    inlined: str, nonce: str, placeholder: re.Pattern[str], constructs: Sequence[_Construct]
) -> str | None:
    """A text-part template from the inlined skeleton, or None when its control flow would not survive."""
    blocks = {f"<!--zgoda-{nonce}-{index}-->" for index, c in enumerate(constructs) if c.kind != "expr"}
    opening = {f"<!--zgoda-{nonce}-{index}-->" for index, c in enumerate(constructs) if c.kind == "open"}
    converter = TextConverter(markers=placeholder, block_markers=blocks, opening_markers=opening)
    converter.feed(inlined)
    text = converter.text()
    found = [int(match.group(1)) for match in placeholder.finditer(text)]
    if not _same_structure(found, constructs, complete=False):
        return None
    pieces: list[str] = []
    position = 0
    for match in placeholder.finditer(text):
        pieces.append(_OPENERS.sub("{{ '{' }}", text[position : match.start()]))
        pieces.append(constructs[int(match.group(1))].source)
        position = match.end()
    pieces.append(_OPENERS.sub("{{ '{' }}", text[position:]))
    return "".join(pieces)


# --- per-message helpers (slow path) ---------------------------------------------------------------------


def _inline_css(html: str) -> str:
    try:
        return _INLINER.inline(html)
    except css_inline.InlineError:
        return normalise_html5(html)


def _sanitised(html: str, slot: str) -> str:
    sanitiser = Sanitiser(slot=slot)
    sanitiser.feed(html)
    return sanitiser.finish()


def _tidy_rendered_text(text: str) -> str:
    """Blank lines left by empty ``if`` branches in a derived text part, folded like the converter does."""
    if "\n\n\n" in text or " \n" in text or "\t\n" in text:
        return tidy_text(text)
    return text
