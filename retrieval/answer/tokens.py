"""Token counts for provider calls whose server sent no usage fields.

No provider's own tokenizer is available offline for every model, so this counts words and
punctuation marks apart (close to BPE counts for English prose); a usage record counted this
way is marked `estimated`, so reports can tell it from the provider's own numbers.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """Words and punctuation marks in `text`: an estimate of its LLM tokens."""
    return len(_TOKEN.findall(text))
