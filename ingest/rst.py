"""reStructuredText → HTML with docutils, tolerant of Sphinx roles and directives.

Django's docs (and most real reST) use Sphinx extensions plain docutils does not know
(`:doc:`, `.. versionadded::`, ...). Unknown roles render as literal text and unknown
directives as a container of their arguments and content, so no text is lost and no
`=====` underline leaks into the index.
"""

from __future__ import annotations

import re
import threading

from docutils import nodes
from docutils.core import publish_parts
from docutils.parsers.rst import Directive, directives, roles

_TARGET = re.compile(r"^(.*?)\s*<(.+)>$", re.S)
_installed = False
_lock = threading.Lock()


def _generic_role(name, rawtext, text, lineno, inliner, options=None, content=None):  # noqa: ANN001
    m = _TARGET.match(text)
    shown = m.group(1) if m and m.group(1) else text
    return [nodes.literal(rawtext, shown.lstrip("~!"))], []


class _AnyOption(dict):
    def __getitem__(self, key: str):  # noqa: ANN204
        return directives.unchanged

    def __contains__(self, key: object) -> bool:
        return True


class _GenericDirective(Directive):
    has_content = True
    optional_arguments = 20
    final_argument_whitespace = True
    option_spec = _AnyOption()

    def run(self) -> list[nodes.Node]:
        node = nodes.container()
        if self.arguments:
            node += nodes.paragraph(text=" ".join(self.arguments))
        if self.content:
            self.state.nested_parse(self.content, self.content_offset, node)
        return [node]


def _install() -> None:
    global _installed
    with _lock:
        if _installed:
            return
        known_role, known_directive = roles.role, directives.directive

        def role(name, language_module, lineno, reporter):  # noqa: ANN001, ANN202
            fn, _ = known_role(name, language_module, lineno, reporter)
            return fn or _generic_role, []

        def directive(name, language_module, document):  # noqa: ANN001, ANN202
            cls, _ = known_directive(name, language_module, document)
            return cls or _GenericDirective, []

        roles.role, directives.directive = role, directive
        _installed = True


_SETTINGS = {
    "report_level": 5,
    "halt_level": 5,
    "warning_stream": False,
    "file_insertion_enabled": False,
    "raw_enabled": False,
    "input_encoding": "unicode",
}


def rst_to_html(text: str) -> str:
    _install()
    return publish_parts(text, writer="html5", settings_overrides=_SETTINGS)["html_body"]
