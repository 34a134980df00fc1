"""Markdown from markdown-it tokens: headings, code, lists and tables as a reader sees them."""

import pytest

from ingest.chunker import Chunker
from ingest.parser import parse

pytestmark = pytest.mark.unit

PAGE = """\
---
title: Deploying
---

# Deploying

Intro with `code`, **bold** and a [link](https://example.com).

## Steps

1. Install the package.
2. Configure it:
   - set `A`
   - set `B`

```python
# not a heading
import os
```

    # indented code
    x = 1

| Option | Default |
|--------|---------|
| `timeout` | 30 |

<div align="center"><b>Raw</b> HTML &amp; text</div>

Setext heading
--------------

> Quoted text.
"""


def md(text: str):
    return parse(text, "text/markdown")


def test_markdown_blocks_become_typed_elements():
    assert [(e.category, e.text, e.level) for e in md(PAGE)] == [
        ("Title", "Deploying", 1),
        ("NarrativeText", "Intro with code, bold and a link.", 0),
        ("Title", "Steps", 2),
        ("ListItem", "Install the package.", 0),
        ("ListItem", "Configure it:", 0),
        ("ListItem", "set A", 1),
        ("ListItem", "set B", 1),
        ("CodeSnippet", "# not a heading\nimport os", 0),
        ("CodeSnippet", "# indented code\nx = 1", 0),
        ("Table", "Option | Default\ntimeout | 30", 0),
        ("NarrativeText", "Raw HTML & text", 0),
        ("Title", "Setext heading", 2),
        ("NarrativeText", "Quoted text.", 0),
    ]


def test_hash_lines_in_code_never_become_sections():
    chunks = Chunker(chunk_size=128).chunk(md(PAGE))
    assert [c.section for c in chunks] == ["Deploying", "Steps", "Setext heading"]
    steps = chunks[1].text
    assert "- Configure it:\n  - set A\n  - set B" in steps
    assert "```\n# not a heading\nimport os\n```" in steps
