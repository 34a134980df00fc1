"""Where a collection lies on disk: the a/b shard dirs, the state file and the op logs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from freshrag.files import replace_atomically


def open_shard(path: Path, config: qe.EdgeConfig) -> qe.EdgeShard:
    """Loads the shard at `path`, or creates it there."""
    if (path / "edge_config.json").exists():
        return qe.EdgeShard.load(str(path), config)
    path.mkdir(parents=True, exist_ok=True)
    return qe.EdgeShard.create(str(path), config)


class StateUnreadable(RuntimeError):
    """Both shard dirs hold a shard and the file that says which one is live is damaged."""


def load_state(path: Path) -> dict[str, Any]:
    """The state file; `{}` when there is none, `{"unreadable": why}` when it is damaged
    (a power cut before its write reached the disk)."""
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        return {"unreadable": f"{type(exc).__name__}: {exc}"}
    return state if isinstance(state, dict) else {"unreadable": "not a JSON object"}


def save_state(
    path: Path, live: str, log_name: str | None, spare_valid: bool, durable: bool = True
) -> None:
    """Atomically: which dir is live, the current log, and whether the spare matches it."""
    state = {"live": live, "log": log_name, "spare_valid": spare_valid}
    replace_atomically(path, json.dumps(state), durable)


def shard_dirs(root: Path, collection: str) -> tuple[Path, Path]:
    """The two dirs a chunks shard and its spare take turns in: `<c>/` and `<c>.b/`."""
    return root / collection, root / f"{collection}.b"


def other_dir(root: Path, collection: str, live: Path) -> Path:
    a, b = shard_dirs(root, collection)
    return b if live == a else a


def op_logs(root: Path, collection: str) -> list[Path]:
    """Every op log of a collection (`_new_log` names them `<c>.oplog.<ns>`)."""
    return list(root.glob(f"{collection}.oplog.*"))


def live_dir(root: Path, collection: str, state: dict[str, Any]) -> Path:
    """The live shard's dir: the one the state file names; a state file that outlived its
    shard (a dropped collection) starts over at `<collection>/`. Without a state file,
    `<collection>/` (shards from before it), or `<collection>.b/` when only that holds a
    shard: a state file lost after `upgrade_offline` moved the shard there must not make
    an empty shard beside it."""
    a, b = shard_dirs(root, collection)
    if state.get("live"):
        named = root / state["live"]
        return named if (named / "edge_config.json").exists() else a
    has_a, has_b = (a / "edge_config.json").exists(), (b / "edge_config.json").exists()
    if "unreadable" in state and has_a and has_b:
        # One of them is the spare, possibly behind: guessing could serve stale chunks.
        when = {
            d: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(_newest_mtime(d))) for d in (a, b)
        }
        raise StateUnreadable(
            f"{root / f'{collection}.edge-state.json'} is unreadable ({state['unreadable']}) "
            f"and both {a} (last written {when[a]}) and {b} (last written {when[b]}) hold "
            "a shard, so which one is live is unknown. The live one is usually the one "
            "written last: move the other out of the way (or delete it) and start again; "
            "the spare is rebuilt from the live one"
        )
    if not has_a and has_b:
        return b
    return a


def _newest_mtime(path: Path) -> float:
    return max((f.stat().st_mtime for f in path.rglob("*") if f.is_file()), default=0.0)


def state_path(root: Path, collection: str) -> Path:
    """The file that names the live dir and the current op log."""
    return root / f"{collection}.edge-state.json"
