"""A plain-text version of an email's HTML: paragraphs, line breaks, "- " lists, "# " headings, "text (url)" links.

Small on purpose (``html.parser``, no dependency): mail clients show the text part rarely, spam filters
compare it with the HTML, and screen readers on plain-text clients read it. Scripts, styles, the head
and hidden template machinery produce nothing; images produce nothing (their alt text is decoration).

``TextConverter`` can also carry opaque markers (Jinja placeholders) through unchanged, so the text
part of a campaign can be derived once from the html template instead of once per message.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from html.parser import HTMLParser

_SKIPPED = frozenset(
    {"script", "style", "head", "title", "noscript", "template", "svg", "math", "iframe", "object", "xmp", "noembed",
     "noframes", "plaintext"}
)  # fmt: skip
_PARAGRAPHS = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table", "blockquote", "pre", "dl", "figure", "address"}
)
_LINES = frozenset(
    {"div", "li", "tr", "section", "article", "header", "footer", "main", "nav", "aside", "center", "dt", "dd",
     "caption", "figcaption", "form", "fieldset", "details", "summary", "tbody", "thead", "tfoot"}
)  # fmt: skip
_CELLS = frozenset({"td", "th"})
_WHITESPACE = re.compile(r"[ \t\n\r\f\v\u00a0]+")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_BLANK_LINES = re.compile(r"\n{3,}")


class TextConverter(HTMLParser):
    """Collects the text; ``markers`` (a pattern) are kept verbatim, ``block_markers`` (if/for/set) owe no space."""

    # html5ever writes these elements' content unescaped: read it as raw text too (typeshed marks this Final)
    CDATA_CONTENT_ELEMENTS = ("script", "style", "xmp", "iframe", "noembed", "noframes", "noscript", "plaintext")  # type: ignore[misc]

    def __init__(
        self,
        *,
        markers: re.Pattern[str] | None = None,
        block_markers: Collection[str] = (),
        opening_markers: Collection[str] = (),
    ) -> None:
        super().__init__(convert_charrefs=True)
        self.markers = markers
        self.block_markers = frozenset(block_markers)
        self.opening_markers = frozenset(opening_markers)
        self.out: list[str] = []
        self.pending = 0  # newlines owed before the next text
        self.at_line_start = True
        self.space = False  # a space owed before the next text
        self.skip = 0
        self.pre = 0
        self.lists: list[str] = []
        self.links: list[tuple[str, int]] = []  # (href, position in out)
        self.cell = False

    # --- output -----------------------------------------------------------------------------------

    def need(self, newlines: int) -> None:
        if self.out:
            self.pending = max(self.pending, newlines)
        self.space = False

    def write(self, text: str) -> None:
        if self.pending:
            self.out.append("\n" * self.pending)
            self.at_line_start = True
            self.pending = 0
        elif self.space and not self.at_line_start:
            self.out.append(" ")
        self.space = False
        self.out.append(text)
        self.at_line_start = text.endswith("\n")

    def words(self, data: str) -> None:
        if self.pre:
            self.write(data)
            return
        if data[:1].isspace() and not self.at_line_start:
            self.space = True
        collapsed = _WHITESPACE.sub(" ", data).strip()
        if collapsed:
            self.write(collapsed)
            if data[-1:].isspace():
                self.space = True

    # --- parser callbacks -----------------------------------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED:
            self.skip += 1
            return
        if self.skip:
            return
        if tag == "br":
            self.write("\n")
        elif tag == "hr":
            self.need(2)
            self.write("-" * 20)
            self.need(2)
        elif tag in ("ul", "ol"):
            self.need(2 if not self.lists else 1)
            self.lists.append(tag)
        elif tag == "li":
            self.need(1)
            self.write("  " * max(len(self.lists) - 1, 0) + "- ")
            self.at_line_start = True
        elif tag in ("h1", "h2", "h3"):
            self.need(2)
            self.write("#" * int(tag[1]) + " ")
            self.at_line_start = True
        elif tag in _PARAGRAPHS:
            self.need(2)
            if tag == "pre":
                self.pre += 1
        elif tag in _LINES:
            self.need(1)
        elif tag in _CELLS:
            if self.cell:
                self.space = True
            self.cell = True
        elif tag == "a":
            href = dict(attrs).get("href") or ""
            self.links.append((href.strip(), len(self.out)))

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self.skip = max(self.skip - 1, 0)
            return
        if self.skip:
            return
        if tag in ("ul", "ol"):
            if self.lists:
                self.lists.pop()
            self.need(2 if not self.lists else 1)
        elif tag in _PARAGRAPHS:
            self.need(2)
            if tag == "pre":
                self.pre = max(self.pre - 1, 0)
        elif tag in _LINES:
            self.need(1)
            if tag == "tr":
                self.cell = False
        elif tag == "a" and self.links:
            href, start = self.links.pop()
            text = "".join(self.out[start:]).strip()
            if href and not href.startswith("#") and href != text and href.removeprefix("mailto:") != text:
                self.write(f"({href})" if not text else f" ({href})")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in ("br", "hr", "img"):
            self.handle_endtag(tag)

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.markers is None:
            self.words(data)
            return
        position = 0
        for match in self.markers.finditer(data):
            self.words(data[position : match.start()])
            self.marker(match.group(0))
            position = match.end()
        self.words(data[position:])

    def handle_comment(self, data: str) -> None:
        comment = f"<!--{data}-->"
        if not self.skip and self.markers is not None and self.markers.fullmatch(comment):
            self.marker(comment)

    def marker(self, marker: str) -> None:
        if marker in self.block_markers:
            # Line breaks owed before an if/for belong before it, so that each branch or loop pass brings its
            # own; a branch's or a pass's trailing breaks stay owed past else/endif/endfor.
            if self.pending and marker in self.opening_markers:
                self.out.append("\n" * self.pending)
                self.pending = 0
                self.at_line_start = True
            self.out.append(marker)
        else:
            self.write(marker)

    def text(self) -> str:
        self.close()
        return tidy_text("".join(self.out))


def tidy_text(text: str) -> str:
    """Trailing spaces off every line, at most one blank line in a row, one final newline."""
    text = _BLANK_LINES.sub("\n\n", _TRAILING_SPACE.sub("\n", text)).strip("\n")
    return text + "\n" if text else ""


def html_to_text(html: str) -> str:
    """The plain-text alternative of an email's HTML (see the module docstring for the rules)."""
    converter = TextConverter()
    converter.feed(html)
    return converter.text()
