"""reStructuredText → elements by walking the docutils doctree.

No HTML, no re-parsing and no text classification: the doctree already says what every
block is. docutils' transforms are skipped too (they resolve links and number footnotes
for a writer; the one that matters for text, substitutions, is done here). docutils
reports nothing (no stderr) and never halts: problems it finds in the document become
`system_message` nodes, which are skipped, and `parse` turns anything it raises (deep
nesting hits the recursion limit) into an UnsupportedDocument.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable

from docutils import frontend, nodes
from docutils.parsers.rst import Parser
from docutils.utils import new_document

from ingest.parsers import sphinx
from ingest.parsers.elements import Element, clean

# Nodes that render no text in Sphinx's HTML (or only a link target / metadata).
_SKIP = frozenset(
    [
        "comment",
        "substitution_definition",
        "target",
        "system_message",
        "pending",
        "raw",
        "meta",
        "image",
        "transition",
        "decoration",
        "label",
        "footnote_reference",
    ]
)
# Inline nodes whose text a reader does not see.
_INLINE_SKIP = frozenset(
    ["footnote_reference", "system_message", "image", "raw", "substitution_definition"]
)
_ADMONITIONS = frozenset(
    [
        "admonition",
        "attention",
        "caution",
        "danger",
        "error",
        "hint",
        "important",
        "note",
        "tip",
        "warning",
    ]
)

_settings_lock = threading.Lock()
_settings: frontend.Values | None = None


def _base_settings() -> frontend.Values:
    global _settings
    with _settings_lock:
        if _settings is None:
            sphinx.install()
            settings = frontend.get_default_settings(Parser)
            settings.report_level = 5  # report nothing ...
            settings.halt_level = 5  # ... and never raise for the document's own mistakes
            settings.warning_stream = False  # no stderr, ever
            settings.file_insertion_enabled = False  # `.. include:: /etc/passwd` stays inert
            settings.raw_enabled = False
            settings.syntax_highlight = "none"  # no pygments pass over `.. code::` blocks
            setattr(settings, sphinx.SPHINX_AWARE, True)
            _settings = settings
        return _settings


def doctree(text: str) -> nodes.document:
    """Parse reST into an untransformed docutils document, Sphinx-tolerant and silent."""
    document = new_document("<document>", copy.copy(_base_settings()))
    Parser().parse(text.removeprefix("\ufeff"), document)
    return document


def parse_rst(text: str) -> list[Element]:
    """reST source → elements in reading order (Title levels follow the section nesting)."""
    return _Walker(doctree(text)).run()


def _label_join(label: str, text: str) -> str:
    """'Note' + 'Do this.' → 'Note: Do this.' (no doubled colon after 'Why?' or 'Usage:')."""
    label = label.rstrip()
    return f"{label} {text}" if label.endswith((":", "?", "!", ".")) else f"{label}: {text}"


class _Walker:
    """One pass over the doctree; each block node becomes zero or more elements."""

    def __init__(self, document: nodes.document) -> None:
        self.document = document
        self.out: list[Element] = []
        self.depth = 0  # section nesting
        self.handlers: dict[str, Callable[[nodes.Element, int], None]] = {
            "section": self._section,
            "paragraph": self._paragraph,
            "rubric": self._paragraph,
            "caption": self._paragraph,
            "title": self._paragraph,  # a stray title outside a section
            "subtitle": self._paragraph,
            "attribution": self._attribution,
            "literal_block": self._code,
            "doctest_block": self._code,
            "math_block": self._formula,
            "bullet_list": self._list,
            "enumerated_list": self._list,
            "definition_list": self._definitions,
            "field_list": self._fields,
            "option_list": self._options,
            "table": self._table,
            "line_block": self._lines,
            "topic": self._titled,
            "sidebar": self._titled,
            **dict.fromkeys(_ADMONITIONS, self._admonition),
        }

    def run(self) -> list[Element]:
        self._blocks(self.document.children, 0)
        return self.out

    # -- plumbing -------------------------------------------------------------------

    def _emit(self, category: str, text: str, level: int = 0) -> None:
        if text.strip():
            self.out.append(Element(category, text, level))

    def _blocks(self, children: Iterable[nodes.Node], list_depth: int) -> None:
        for child in children:
            self._block(child, list_depth)

    def _block(self, node: nodes.Node, list_depth: int) -> None:
        if isinstance(node, nodes.Text):  # loose text inside a container
            self._emit("NarrativeText", clean(node.astext()))
            return
        assert isinstance(node, nodes.Element)
        handler = self.handlers.get(node.tagname)
        if handler is not None:
            handler(node, list_depth)
        elif node.tagname not in _SKIP:
            self._blocks(node.children, list_depth)  # containers, quotes, figures, desc, ...

    def _inline(self, node: nodes.Node) -> str:
        """The text a reader sees in an inline run, on one line."""
        return clean(self._inline_raw(node))

    def _inline_raw(self, node: nodes.Node) -> str:
        parts: list[str] = []
        for child in node.children:
            if isinstance(child, nodes.Text):
                parts.append(child.astext())
            elif child.tagname == "substitution_reference":
                parts.append(self._substitution(child))
            elif child.tagname not in _INLINE_SKIP:
                parts.append(self._inline_raw(child))
        return "".join(parts)

    def _substitution(self, ref: nodes.Element) -> str:
        """`|name|` → the definition's text (transforms would have done this)."""
        name = self.document.substitution_names.get(nodes.fully_normalize_name(ref["refname"]))
        definition = self.document.substitution_defs.get(name) if name else None
        return self._inline_raw(definition) if definition is not None else ref.astext()

    def _flat(self, children: Iterable[nodes.Node]) -> str:
        """Everything under some nodes as one line (table cells)."""
        saved, self.out = self.out, []
        try:
            self._blocks(children, 0)
            return " ".join(e.text for e in self.out)
        finally:
            self.out = saved

    def _lead(self, label: str, body: list[nodes.Node], list_depth: int) -> None:
        """A label followed by a body: joined to the body's first paragraph when it has one."""
        if body and body[0].tagname == "paragraph":
            self._emit("NarrativeText", _label_join(label, self._inline(body[0])))
            body = body[1:]
        else:
            self._emit("NarrativeText", label)
        self._blocks(body, list_depth)

    # -- block handlers -------------------------------------------------------------

    def _section(self, node: nodes.Element, list_depth: int) -> None:
        self.depth += 1
        try:
            body = list(node.children)
            if body and body[0].tagname == "title":
                self._emit("Title", self._inline(body.pop(0)), self.depth)
            self._blocks(body, 0)
        finally:
            self.depth -= 1

    def _paragraph(self, node: nodes.Element, list_depth: int) -> None:
        self._emit("NarrativeText", self._inline(node))

    def _attribution(self, node: nodes.Element, list_depth: int) -> None:
        self._emit("NarrativeText", "\N{EM DASH} " + self._inline(node))

    def _code(self, node: nodes.Element, list_depth: int) -> None:
        self._emit("CodeSnippet", node.astext().strip("\n").rstrip())

    def _formula(self, node: nodes.Element, list_depth: int) -> None:
        self._emit("Formula", node.astext().strip())

    def _list(self, node: nodes.Element, list_depth: int) -> None:
        for item in node.children:
            body = list(item.children)
            if body and body[0].tagname == "paragraph":
                self._emit("ListItem", self._inline(body.pop(0)), list_depth)
            self._blocks(body, list_depth + 1)

    def _definitions(self, node: nodes.Element, list_depth: int) -> None:
        for item in node.children:
            term = " : ".join(
                self._inline(c) for c in item.children if c.tagname in ("term", "classifier")
            )
            body = [c for c in item.children if c.tagname == "definition"]
            self._lead(term, list(body[0].children) if body else [], list_depth)

    def _fields(self, node: nodes.Element, list_depth: int) -> None:
        for field in node.children:
            name, body = field.children[0], list(field.children[1].children)
            if body:  # an empty field (`:orphan:`) is file metadata, not text
                self._lead(self._inline(name), body, list_depth)

    def _options(self, node: nodes.Element, list_depth: int) -> None:
        for item in node.children:
            group = ", ".join(self._option(o) for o in item.children[0].children)
            description = list(item.children[1].children) if len(item.children) > 1 else []
            self._lead(group, description, list_depth)

    @staticmethod
    def _option(option: nodes.Element) -> str:
        """`--name=VALUE` as written (astext() would glue the value onto the name)."""
        return "".join(
            c.get("delimiter", " ") + c.astext() if c.tagname == "option_argument" else c.astext()
            for c in option.children
        )

    def _table(self, node: nodes.Element, list_depth: int) -> None:
        lines = [self._inline(t) for t in node.children if t.tagname == "title"]
        for row in node.findall(nodes.row):
            cells = [self._flat(entry.children) for entry in row.children]
            if any(cells):
                lines.append(" | ".join(cells))
        self._emit("Table", "\n".join(line for line in lines if line))

    def _lines(self, node: nodes.Element, list_depth: int) -> None:
        lines = [self._inline(line) for line in node.findall(nodes.line)]
        self._emit("NarrativeText", "\n".join(lines).strip())

    def _titled(self, node: nodes.Element, list_depth: int) -> None:
        if "contents" in node["classes"]:  # `.. contents::`: a generated table of contents
            return
        self._blocks(node.children, list_depth)

    def _admonition(self, node: nodes.Element, list_depth: int) -> None:
        body = list(node.children)
        if body and body[0].tagname == "title":
            label = self._inline(body.pop(0))
        else:
            label = node.tagname.capitalize()
        self._lead(label, body, list_depth)
