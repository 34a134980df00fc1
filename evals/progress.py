"""Progress bars for a person at a terminal only: in a log file or a cron mail a bar is one
endless carriage-return line, so it is off whenever stderr is not a TTY."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


def bar(iterable: Any = None, *, progress: bool = True, **kwargs: Any) -> tqdm:
    return tqdm(iterable, disable=not (progress and sys.stderr.isatty()), **kwargs)
