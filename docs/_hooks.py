"""MkDocs hook: generates reference sections at build time, so nothing is typed twice.

A page asks for a section with a marker alone on its line:

- ``gen:settings``: every field of ``freshrag.settings.Settings`` (env var, type, default,
  description), grouped by the ``# --- group ---`` comments of its source;
- ``gen:cli``: every command and option of the ``freshrag`` click group;
- ``gen:bench NAME [skip=a,b.c] [only=d.e]``: the figures of ``bench/results/NAME.json``,
  whatever their shape (scalars as a table, a dict of dicts or a list of dicts as rows);
- ``gen:bench-rest``: every results file that no ``gen:bench`` marker of the page names.

Each marker is an HTML comment (``<!-- gen:... -->``), invisible where it is not rendered.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import click
from mkdocs.exceptions import PluginError
from pydantic import BaseModel, TypeAdapter
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
MARKER = re.compile(r"^<!--\s*gen:([\w-]+)((?:\s+[^\s>]+)*)\s*-->[ \t]*$", re.MULTILINE)
CLI_MODULES = ("freshrag.cli",)  # where the click group lives, newest first
MAX_COLUMNS = 8  # a wider table with few rows is shown transposed
FOLD_ROWS = 25  # a longer table is folded into <details>
LONG_LIST = 6  # a longer list of rows inside a row is summarised as "N items"


# --- the hook --------------------------------------------------------------------------


def on_page_markdown(markdown: str, **_: Any) -> str:
    markers = [(m.group(1), m.group(2).split()) for m in MARKER.finditer(markdown)]
    named = {args[0] for kind, args in markers if kind == "bench" and args}

    def expand(match: re.Match[str]) -> str:
        kind, args = match.group(1), match.group(2).split()
        if kind == "settings":
            return settings_markdown()
        if kind == "cli":
            return cli_markdown()
        if kind == "bench" and args:
            options = dict(a.split("=", 1) for a in args[1:] if "=" in a)
            pick = Pick(_names(options.get("skip")), _names(options.get("only")))
            return bench_markdown(args[0], pick)
        if kind == "bench-rest":
            return bench_rest_markdown(exclude=named)
        raise PluginError(f"unknown docs marker: {match.group(0)}")

    return MARKER.sub(expand, markdown)


def _names(option: str | None) -> frozenset[str]:
    return frozenset(option.split(",")) if option else frozenset()


# --- tables ------------------------------------------------------------------------------


def prose(text: str) -> str:
    """`text` as markdown: `<` and `>` outside code spans escaped (not taken for HTML tags)."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def _code(text: str) -> str:
    """`text` as a code span, even when it holds backticks itself."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _cell(value: object) -> str:
    return str(value).replace("\n", " ").replace("|", "\\|")


def table(header: list[str], rows: Iterable[list[str]], summary: str = "") -> str:
    rows = list(rows)
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |"]
    lines.append("| " + " | ".join("---" for _ in header) + " |")
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    text = "\n".join(lines)
    if len(rows) > FOLD_ROWS:
        label = summary or "table"
        text = f'<details markdown="1">\n<summary>{label}: {len(rows)} rows</summary>\n\n{text}\n\n</details>'
    return text


# --- configuration -----------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return " or ".join(f"`{a}`" for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if tp is type(None):
        return "unset"
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(tp, "__name__", str(tp))


def _constraints(metadata: list[Any]) -> str:
    signs = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    parts = [
        f"{sign} {getattr(m, k)}" for m in metadata for k, sign in signs.items() if hasattr(m, k)
    ]
    return ", ".join(parts)


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "unset"
    if isinstance(value, str | Path):
        return f"`{value}`"
    dumped = TypeAdapter(field.annotation).dump_python(value, mode="json", exclude_defaults=True)
    return f"`{json.dumps(dumped, separators=(',', ':'))}`"


def _field_rows(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, list[str]]]:
    """(name, [variable, type, default, description]) per field of `model`."""
    for name, field in model.model_fields.items():
        kind = _type_name(field.annotation)
        limits = _constraints(field.metadata)
        cells = [
            f"`{prefix}{(field.alias or name).upper()}`" if prefix else f"`{name}`",
            f"{kind}, {limits}" if limits else kind,
            _default(field),
            prose(field.description or ""),
        ]
        yield name, cells


def _groups(model: type[BaseModel]) -> dict[str, str]:
    """Field name → the `# --- group ---` comment above it in the model's source."""
    try:
        source = inspect.getsource(model)
    except (OSError, TypeError):
        return {}
    group, found = "General", {}
    for line in source.splitlines():
        if heading := re.match(r"\s*# -+ (.+?) -+\s*$", line):
            group = heading.group(1)
        elif field := re.match(r" {4}(\w+)\s*:", line):
            found[field.group(1)] = group
    return found


def _nested_models(tp: Any) -> Iterator[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        yield tp
    for arg in get_args(tp):
        yield from _nested_models(arg)


def settings_markdown() -> str:
    from freshrag.settings import Settings

    prefix = str(Settings.model_config.get("env_prefix", "")).upper()
    header = ["Variable", "Type", "Default", "Description"]
    by_group: dict[str, list[list[str]]] = {}
    groups = _groups(Settings)
    for name, cells in _field_rows(Settings, prefix):
        by_group.setdefault(groups.get(name, "General"), []).append(cells)
    blocks = [
        f"### {g[:1].upper()}{g[1:]}\n\n{table(header, rows)}" for g, rows in by_group.items()
    ]
    for name, field in Settings.model_fields.items():
        for model in _nested_models(field.annotation):
            intro = prose(inspect.cleandoc(model.__doc__ or ""))
            rows = [cells for _, cells in _field_rows(model, "")]
            env = f"{prefix}{name.upper()}"
            blocks.append(
                f"### `{model.__name__}`: the items of `{env}`\n\n{intro}\n\n"
                + table(["Key", "Type", "Default", "Description"], rows)
            )
    return "\n\n".join(blocks)


# --- CLI ------------------------------------------------------------------------------------


def load_cli() -> click.Group:
    """The `freshrag` click group, wherever it lives now (`freshrag.cli`, else `freshrag.cli`)."""
    for name in CLI_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # only this module missing, not one it imports
            if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
                continue
            raise
        return module.cli
    raise PluginError(f"no click group `cli` in any of {', '.join(CLI_MODULES)}")


def _option_default(param: click.Parameter, ctx: click.Context) -> str:
    default = param.get_default(ctx, call=False)
    if isinstance(param, click.Option) and param.is_flag:
        if param.secondary_opts:
            return f"`{(param.opts if default else param.secondary_opts)[0]}`"
        return "on" if default is True else ""
    if not isinstance(default, str | int | float | tuple | list) or default in ("", (), []):
        return ""  # none, computed at run time, or click's "unset"
    return f"`{default}`"


def _option_type(param: click.Parameter) -> str:
    if isinstance(param, click.Option) and param.is_flag:
        return "flag"
    kind = param.type
    text = (
        " or ".join(f"`{c}`" for c in kind.choices) if isinstance(kind, click.Choice) else kind.name
    )
    if param.multiple or (param.nargs == -1):
        text += ", repeatable"
    return text


def _command_markdown(command: click.Command, ctx: click.Context) -> str:
    usage = " ".join([ctx.command_path, *command.collect_usage_pieces(ctx)])
    help_text = prose(inspect.cleandoc(command.help or "").replace("\b\n", ""))
    blocks = [f"## `{ctx.command_path}`", help_text, f"```text\n{usage}\n```"]
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    if arguments:
        blocks.append(
            "Arguments: "
            + ", ".join(
                f"`{(p.metavar or p.name or '').upper()}` ({_option_type(p)})" for p in arguments
            )
        )
    options = [p for p in command.params if isinstance(p, click.Option) and not p.hidden]
    if options:
        rows = [
            [
                " / ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts]),
                _option_type(p),
                _option_default(p, ctx),
                prose(p.help or ""),
            ]
            for p in options
        ]
        blocks.append(table(["Option", "Type", "Default", "Help"], rows))
    return "\n\n".join(b for b in blocks if b)


def _walk(command: click.Command, ctx: click.Context) -> Iterator[str]:
    yield _command_markdown(command, ctx)
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            if not sub.hidden:
                yield from _walk(sub, click.Context(sub, info_name=name, parent=ctx))


def cli_markdown() -> str:
    group = load_cli()
    return "\n\n".join(_walk(group, click.Context(group, info_name="freshrag")))


# --- benchmark results -------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.4g}"
    if isinstance(value, list):
        if len(value) > 8 or any(isinstance(v, list | dict) for v in value):
            return f"{len(value)} items"
        return " / ".join(_fmt(v) for v in value) if value else "—"
    return prose(str(value))


def _is_row(value: Any) -> bool:
    return isinstance(value, dict) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
    )


def _is_table(value: Any) -> bool:
    """A non-empty dict of dicts: one table, a row per entry."""
    return (
        isinstance(value, dict) and bool(value) and all(isinstance(v, dict) for v in value.values())
    )


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts (and short lists of dicts) as dotted keys; anything else as a value."""
    if isinstance(value, dict):
        items: Iterable[tuple[str, Any]] = value.items()
    elif _is_row(value) and len(value) <= LONG_LIST:
        items = ((str(i), v) for i, v in enumerate(value, 1))
    elif _is_row(value):
        return {prefix: f"{len(value)} items"}
    else:
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in items:
        flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _shape_groups(rows: dict[str, dict[str, Any]]) -> list[dict[str, dict[str, Any]]]:
    """Rows of alike keys together (Jaccard ≥ 0.5), so an odd phase gets its own table."""
    groups: list[dict[str, dict[str, Any]]] = []
    for label, row in rows.items():
        for group in groups:
            keys = set().union(*(r.keys() for r in group.values()))
            if len(keys & row.keys()) * 2 >= len(keys | row.keys()):
                group[label] = row
                break
        else:
            groups.append({label: row})
    return groups


def _rows_table(caption: str, rows: dict[str, dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(k for row in rows.values() for k in row))
    labels = list(rows)
    if len(columns) > MAX_COLUMNS and len(labels) <= MAX_COLUMNS - 2:
        header = [caption, *labels]
        body = [[c, *(_fmt(rows[lab].get(c)) for lab in labels)] for c in columns]
    else:
        header = [caption, *columns]
        body = [[lab, *(_fmt(rows[lab].get(c)) for c in columns)] for lab in labels]
    return table(header, body, summary=caption)


@dataclass(frozen=True)
class Pick:
    """Which figures of a results file to show, by dotted path (`phases.lag_p99_s`, without
    row labels): none under a `skip` path, and with `only`, just those under its paths."""

    skip: frozenset[str] = frozenset()
    only: frozenset[str] = frozenset()

    def __call__(self, path: str) -> bool:
        if any(path == s or path.startswith(f"{s}.") for s in self.skip):
            return False
        return not self.only or any(
            path == o or path.startswith(f"{o}.") or o.startswith(f"{path}.") for o in self.only
        )


def _render(data: dict[str, Any], path: str, pick: Pick) -> Iterator[str]:
    """Scalars as one two-column table, then each dict of rows or list of rows as a table."""
    here = {k: v for k, v in data.items() if pick(f"{path}{k}")}
    scalars = {k: v for k, v in here.items() if not _is_row(v) or not v}
    long = {k: f"{len(v)} items" for k, v in here.items() if isinstance(v, list) and len(v) > 50}
    scalars |= {k: v for k, v in long.items() if _is_row(here[k])}
    if scalars:
        yield table(["figure", "value"], ([k, _fmt(v)] for k, v in scalars.items()), path[:-1])
    for key, value in here.items():
        if key in scalars:
            continue
        caption, label_key, nested = f"{path}{key}", key, {}
        if isinstance(value, list):
            first, rows = _label_rows(value)
            label_key = first or key
        elif all(isinstance(v, dict) for v in value.values()):
            nested = {k: v for k, v in value.items() if _is_table(v) and pick(f"{caption}.{k}")}
            rows = {
                str(k): _flatten(v)
                for k, v in value.items()
                if k not in nested and pick(f"{caption}.{k}")
            }
        else:
            yield f"**{caption}**"
            yield from _render(value, f"{caption}.", pick)
            continue
        rows = {
            label: {k: v for k, v in row.items() if pick(f"{caption}.{k}")}
            for label, row in rows.items()
        }
        for group in _shape_groups({label: row for label, row in rows.items() if row}):
            yield f"**{caption}**"
            yield _rows_table(label_key, group)
        for sub, phases in nested.items():  # a phase made of phases: a table of its own
            yield from _render({sub: phases}, f"{caption}.", pick)


def _label_rows(items: list[dict[str, Any]]) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """A list's rows, labelled by their common first key when its values tell them apart
    (that key is returned, and left out of the rows); else numbered from 1."""
    rows = [_flatten(item) for item in items]
    first = next(iter(rows[0]), None)
    labels = [_fmt(row.get(first)) for row in rows]
    if first is None or len(set(labels)) < len(rows) or any(next(iter(r)) != first for r in rows):
        return None, {str(i): row for i, row in enumerate(rows, 1)}
    return first, {
        lab: {k: v for k, v in row.items() if k != first}
        for lab, row in zip(labels, rows, strict=True)
    }


def _run_facts(data: dict[str, Any]) -> tuple[list[str], set[str]]:
    """How the figures were made (command, commit, time, load, machine), and the keys used."""
    facts, used = [], {"benchmark"}
    for key in ("command", "commit", "at"):
        value = data.get(key)
        if isinstance(value, str):
            facts.append(f"- {key}: {_code(value)}" if key == "command" else f"- {key}: {value}")
            used.add(key)
    machine = data.get("machine")
    if isinstance(machine, dict) and not any(_is_row(v) for v in machine.values()):
        data = {**data, **{f"machine {k}": v for k, v in machine.items()}}
        used.add("machine")
    for key, value in data.items():
        if key in used or _is_row(value):
            continue
        if "load" in key:
            span = " (1, 5, 15 min)" if isinstance(value, list) and len(value) == 3 else ""
            facts.append(f"- {key}{span}: {_fmt(value)}")
            used.add(key)
        elif key.startswith("machine "):
            facts.append(f"- {key}: {_fmt(value)}")
    return facts, used


def bench_markdown(name: str, pick: Pick | None = None, results: Path = RESULTS) -> str:
    """The figures of `results/NAME.json`: how they were made, then tables of them."""
    path = results / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return f"*No results yet: `bench/results/{name}.json` does not exist.*"
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return f"*`bench/results/{name}.json` could not be read ({exc}).*"
    if not isinstance(data, dict):
        data = {"results": data}
    facts, used = _run_facts(data)
    rest = {k: v for k, v in data.items() if k not in used}
    blocks = ["\n".join(facts)] if facts else []
    blocks += list(_render(rest, "", pick or Pick()))
    blocks.append(f"Source: `bench/results/{name}.json`.")
    return "\n\n".join(blocks)


def bench_rest_markdown(exclude: set[str], results: Path = RESULTS) -> str:
    """A section for each results file that the page does not show already."""
    names = sorted(p.stem for p in results.glob("*.json") if p.stem not in exclude)
    if not names:
        return "*None: every results file has its section above.*"
    return "\n\n".join(f"## {n}\n\n{bench_markdown(n, results=results)}" for n in names)
