"""The previous reST path (docutils → HTML → unstructured), kept only as a baseline.

`bench.parse` times it against `ingest.parsers.rst` in the same run; the service no
longer uses it. It renders HTML with docutils, then unstructured's `partition_html`
re-parses that HTML and runs spaCy text-type classification on every block. Unknown
roles and directives get the old generic stand-ins (see `ingest.parsers.sphinx`).
"""

from __future__ import annotations

from docutils.core import publish_parts

from ingest.parsers import sphinx
from ingest.parsers.elements import Element

_SETTINGS = {
    "report_level": 5,
    "halt_level": 5,
    "warning_stream": False,
    "file_insertion_enabled": False,
    "raw_enabled": False,
    "input_encoding": "unicode",
}


def rst_to_html(text: str) -> str:
    sphinx.install()
    return publish_parts(text, writer="html5", settings_overrides=_SETTINGS)["html_body"]


def parse_via_html(text: str) -> list[Element]:
    """The old `parse(text, "text/x-rst")`: HTML round trip plus NLP classification."""
    from unstructured.partition.html import partition_html

    from ingest.parsers.unstructured import install_offline_nlp, to_elements

    install_offline_nlp()
    return to_elements(partition_html(text=rst_to_html(text)))
