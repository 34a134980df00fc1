"""Sphinx's roles and directives for a plain docutils parser.

Real reST (Django's docs included) is written for Sphinx, and plain docutils reports its
roles and directives as errors and drops their text. These stand-ins give each one what a
reader of the built HTML would see: a cross-reference becomes its shown title, a code
block stays code, an object description keeps its signature, a version note keeps its
label, and markup that renders nothing in HTML (`index`, `toctree`, `highlight`, the
argument of `only`, ...) produces no text at all.

They live in docutils' global role/directive lookups (installed once), but only documents
whose settings carry `SPHINX_AWARE` get them; any other document (the legacy HTML path
kept for the benchmark baseline) gets the old generic stand-ins, so each path behaves as
it always did.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

from docutils import nodes, utils
from docutils.parsers.rst import Directive, directives, roles

SPHINX_AWARE = "freshrag_sphinx_aware"  # a docutils settings attribute

_TARGET = re.compile(r"^(.*?)\s*<(.+)>$", re.S)
_DOMAIN = re.compile(r"^(?:py|std|rst|c|cpp|js):", re.I)
_CALLABLE_ROLES = {"func", "meth", "py:func", "py:meth"}
_EXTLINK_CAPTIONS = {"ticket": "#{}", "cve": "CVE-{}", "bpo": "bpo-{}"}


def _aware(document: nodes.document | None) -> bool:
    return bool(document is not None and getattr(document.settings, SPHINX_AWARE, False))


# --- roles ----------------------------------------------------------------------------


def _shown_title(name: str, text: str) -> str:
    """What Sphinx prints for `:name:`text``: the explicit title, else the target, tidied."""
    m = _TARGET.match(text)
    if m and m.group(1):
        return m.group(1)
    target = m.group(2) if m else text
    target = target.removeprefix("!")
    if target.startswith("~"):
        target = target[1:].rsplit(".", 1)[-1]
    elif target.startswith(".") and len(target) > 1:
        target = target[1:]
    if name.lower() in _CALLABLE_ROLES:  # Sphinx's add_function_parentheses
        target = target.removesuffix("()") + "()"
    caption = _EXTLINK_CAPTIONS.get(name.lower())
    if caption:
        return caption.format(target)
    if name.lower() == "menuselection":
        return target.replace("-->", "\N{TRIANGULAR BULLET}")
    if name.lower() == "guilabel":
        return target.replace("&&", "\x00").replace("&", "").replace("\x00", "&")
    return target


def _generic_role(
    name: str,
    rawtext: str,
    text: str,
    lineno: int,
    inliner: Any,
    options: dict | None = None,
    content: list | None = None,
) -> tuple[list[nodes.Node], list[nodes.system_message]]:
    if _aware(getattr(inliner, "document", None)):
        return [nodes.literal(rawtext, _shown_title(name, utils.unescape(text)))], []
    m = _TARGET.match(text)  # the legacy behaviour, byte for byte
    shown = m.group(1) if m and m.group(1) else text
    return [nodes.literal(rawtext, shown.lstrip("~!"))], []


# --- directives -----------------------------------------------------------------------


class _AnyOption(dict):
    """Accept every option: Sphinx directives have many, and none of them is text."""

    def __getitem__(self, key: str) -> Callable[[str | None], str]:
        return directives.unchanged

    def __contains__(self, key: object) -> bool:
        return True


class _Tolerant(Directive):
    has_content = True
    optional_arguments = 20
    final_argument_whitespace = True
    option_spec = _AnyOption()


class GenericDirective(_Tolerant):
    """Unknown directive: its arguments as a paragraph, its content parsed as reST."""

    def run(self) -> list[nodes.Node]:
        node = nodes.container()
        if self.arguments:
            node += nodes.paragraph(text=" ".join(self.arguments))
        if self.content:
            self.state.nested_parse(self.content, self.content_offset, node)
        return [node]


class _Silent(_Tolerant):
    """Renders nothing in Sphinx's HTML (index entries, toctrees, targets, settings)."""

    def run(self) -> list[nodes.Node]:
        return []


class _Code(_Tolerant):
    """Content is code, never reST: `code-block`, `doctest`, `console`, ..."""

    def run(self) -> list[nodes.Node]:
        if "hide" in self.options or not self.content:
            return []
        text = "\n".join(self.content)
        return [nodes.literal_block(text, text)]


class _Nested(_Tolerant):
    """Content parsed as reST, arguments dropped (`glossary`, `hlist`, ...)."""

    def run(self) -> list[nodes.Node]:
        node = nodes.container()
        if self.content:
            self.state.nested_parse(self.content, self.content_offset, node)
        return [node]


class _Only(_Tolerant):
    """`.. only:: html`: keep the content an HTML build shows; the expression is never text."""

    _HTML_TAGS = {"html", "format_html", "builder_html"}

    def run(self) -> list[nodes.Node]:
        if not self.content or not self._shown_in_html(" ".join(self.arguments)):
            return []
        node = nodes.container()
        self.state.nested_parse(self.content, self.content_offset, node)
        return [node]

    @classmethod
    def _shown_in_html(cls, expression: str) -> bool:
        # Tags become True/False and nothing else survives, so eval only ever sees booleans,
        # and/or/not and parentheses.
        words = re.findall(r"[\w.-]+|[()]", expression)
        keywords = {"and", "or", "not", "(", ")"}
        python = " ".join(w if w in keywords else str(w in cls._HTML_TAGS) for w in words)
        try:
            return bool(eval(python or "True", {"__builtins__": {}}, {}))
        except Exception:  # malformed (or absurdly nested) expression: keep the content
            return True


class _Labelled(_Tolerant):
    """A box with a label: `seealso`, `versionadded`, `deprecated`, ... → an admonition."""

    optional_arguments = 2  # the version, then (rarely) the text on the same line

    labels = {
        "seealso": "See also",
        "versionadded": "Added in version {}",
        "versionchanged": "Changed in version {}",
        "deprecated": "Deprecated since version {}",
        "versionremoved": "Removed in version {}",
    }

    def run(self) -> list[nodes.Node]:
        name = _DOMAIN.sub("", self.name).lower()
        args = list(self.arguments)
        version = args.pop(0).split(None, 1) if args and name != "seealso" else []
        if len(version) > 1:  # `.. versionadded:: 5.0 The flag.` (one argument, with text)
            args.insert(0, version[1])
        label = self.labels[name].format(version[0] if version else "").strip()
        node = nodes.admonition()
        node += nodes.title(label, label)
        if args:
            inline, messages = self.state.inline_text(" ".join(args), self.lineno)
            node += nodes.paragraph("", "", *inline)
            node += messages
        if self.content:
            self.state.nested_parse(self.content, self.content_offset, node)
        return [node]


class _Description(_Tolerant):
    """An object description (`class`, `method`, `django-admin`, ...): signature, then text."""

    optional_arguments = 1  # one string: several signatures are several lines of it

    prefixes = {
        "class": "class ",
        "exception": "exception ",
        "classmethod": "classmethod ",
        "staticmethod": "staticmethod ",
        "decorator": "@",
        "decoratormethod": "@",
        "property": "property ",
        "django-admin": "django-admin ",
        "envvar": "",
    }

    def run(self) -> list[nodes.Node]:
        name = _DOMAIN.sub("", self.name).lower()
        prefix = self.prefixes.get(name.removeprefix("auto"), "")
        node = nodes.container(classes=["signature"])
        signatures = re.sub(r"\\\n", "", self.arguments[0]) if self.arguments else ""
        for line in signatures.splitlines():
            if line.strip():
                node += nodes.paragraph(text=prefix + line.strip())
        if self.content:
            self.state.nested_parse(self.content, self.content_offset, node)
        return [node]


_CODE = (
    "code-block sourcecode doctest testcode testoutput console snippet prompt ipython "
    "jupyter-execute code-cell productionlist graphviz digraph graph mermaid plantuml uml"
)
_SILENT = (
    "index toctree highlight tabularcolumns sectionauthor moduleauthor codeauthor "
    "currentmodule module program default-domain todo todolist testsetup testcleanup "
    "literalinclude autosummary spelling spelling:word-list "
    # Django's docs declare these with add_crossref_type: a link target, no visible text.
    "setting templatetag templatefilter fieldlookup"
)
_DESCRIPTIONS = (
    "class function method attribute data exception classmethod staticmethod decorator "
    "decoratormethod property type object describe option cmdoption envvar "
    "member macro struct union enum enumerator var "
    "django-admin django-admin-option autoclass autofunction automethod autoattribute "
    "autodata autoexception automodule autoproperty autodecorator"
)
SPHINX_DIRECTIVES: dict[str, type[Directive]] = {
    **dict.fromkeys(_CODE.split(), _Code),
    **dict.fromkeys(_SILENT.split(), _Silent),
    **dict.fromkeys(_DESCRIPTIONS.split(), _Description),
    **dict.fromkeys(_Labelled.labels, _Labelled),
    "only": _Only,
    "glossary": _Nested,
    "hlist": _Nested,
    "acks": _Nested,
    "centered": GenericDirective,
}


# Only with their domain prefix: a bare `.. role::` is docutils' own (it defines a role).
_DOMAIN_ONLY = dict.fromkeys(["directive", "directive:option", "role"], _Description)


def _sphinx_directive(name: str) -> type[Directive] | None:
    name = name.lower()
    if name in SPHINX_DIRECTIVES:
        return SPHINX_DIRECTIVES[name]
    bare = _DOMAIN.sub("", name)
    if bare == name:
        return None
    return SPHINX_DIRECTIVES.get(bare) or _DOMAIN_ONLY.get(bare)


# --- installation ---------------------------------------------------------------------

_installed = False
_lock = threading.Lock()


def install() -> None:
    """Wrap docutils' role and directive lookups once per process (idempotent, thread-safe)."""
    global _installed
    with _lock:
        if _installed:
            return
        known_role, known_directive = roles.role, directives.directive

        def role(name, language_module, lineno, reporter):  # noqa: ANN001, ANN202
            fn, _ = known_role(name, language_module, lineno, reporter)
            return fn or _generic_role, []

        def directive(name, language_module, document):  # noqa: ANN001, ANN202
            if _aware(document):
                # Sphinx's meaning wins over docutils' own (`.. class::` is py:class there).
                cls = _sphinx_directive(name)
                if cls is not None:
                    return cls, []
            cls, _ = known_directive(name, language_module, document)
            return cls or GenericDirective, []

        roles.role, directives.directive = role, directive
        _installed = True
