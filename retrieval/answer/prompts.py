"""Versioned prompt templates (files in `prompt_templates/`), picked by name, label or version.

A label (`production`, `canary`) names the version a request gets when it asks for that
label; `move_label` moves one in the files, which the service reads when it starts.
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

TEMPLATES = Path(__file__).with_name("prompt_templates")
DEFAULT_NAME = "grounded-answer"
DEFAULT_LABEL = "production"
REFUSAL = "I don't know based on the provided sources."


class PromptError(ValueError):
    """Unknown prompt or a template that does not render; the API answers 4xx."""


class UnknownPrompt(PromptError):
    """No prompt by that name, version or label: the API answers 404."""


@dataclass(frozen=True, slots=True)
class Prompt:
    name: str
    version: int
    labels: tuple[str, ...]
    system: str
    user: str
    description: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def render(self, question: str, contexts: str) -> tuple[str, str]:
        values = {"question": question, "contexts": contexts, "refusal": REFUSAL}
        try:
            return self.system.format_map(values), self.user.format_map(values)
        except (KeyError, IndexError, ValueError) as exc:
            raise PromptError(f"prompt {self.ref} does not render: {exc!r}") from exc


class Versioned(Protocol):
    """What picking a version needs: a template here, or a service's GET /prompts entry."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def labels(self) -> Sequence[str]: ...


V = TypeVar("V", bound=Versioned)


def select(
    prompts: Iterable[V],
    name: str | None = None,
    label: str | None = None,
    version: int | None = None,
) -> V:
    """The version `version` of `name`, else its highest version labelled `label`.

    One rule for the service and for clients that pick from its GET /prompts list, so an
    evaluation compares the version the service would serve.
    """
    name = name or DEFAULT_NAME
    every = list(prompts)
    candidates = sorted((p for p in every if p.name == name), key=lambda p: p.version)
    if not candidates:
        known = ", ".join(sorted({p.name for p in every})) or "none"
        raise UnknownPrompt(f"unknown prompt '{name}'; known: {known}")
    if version is not None:
        for p in candidates:
            if p.version == version:
                return p
        versions = ", ".join(str(p.version) for p in candidates)
        raise UnknownPrompt(f"prompt '{name}' has no version {version}; versions: {versions}")
    label = label or DEFAULT_LABEL
    labelled = [p for p in candidates if label in p.labels]
    if not labelled:
        known = ", ".join(sorted({lb for p in candidates for lb in p.labels})) or "none"
        raise UnknownPrompt(f"prompt '{name}' has no version labelled '{label}'; labels: {known}")
    return labelled[-1]


@dataclass(frozen=True, slots=True)
class Selection:
    """`NAME@LABEL` or `NAME@VERSION` as a user writes it (`grounded-answer@canary`)."""

    name: str
    label: str | None = None
    version: int | None = None

    @classmethod
    def parse(cls, text: str) -> Selection:
        name, at, which = text.strip().partition("@")
        if not (name and at and which) or "@" in which:
            raise PromptError(
                f"'{text}' is not NAME@LABEL or NAME@VERSION (e.g. {DEFAULT_NAME}@canary)"
            )
        if which.isdigit():
            return cls(name, version=int(which))
        return cls(name, label=which)

    def __str__(self) -> str:
        return f"{self.name}@{self.version if self.version is not None else self.label}"


class PromptRegistry:
    def __init__(self, prompts: list[Prompt]) -> None:
        self.prompts = sorted(prompts, key=lambda p: (p.name, p.version))

    @classmethod
    def load(cls, folder: Path = TEMPLATES) -> PromptRegistry:
        return cls([_read(f) for f in sorted(folder.glob("*.toml"))])

    def resolve(
        self, name: str | None = None, label: str | None = None, version: int | None = None
    ) -> Prompt:
        return select(self.prompts, name, label, version)


def _read(f: Path) -> Prompt:
    d = tomllib.loads(f.read_text())
    return Prompt(
        d["name"],
        int(d["version"]),
        tuple(d.get("labels", [])),
        d["system"],
        d["user"],
        d.get("description", ""),
    )


# A `labels = [...]` assignment at the start of a line (one line or several).
_LABELS = re.compile(r"^labels[ \t]*=[ \t]*\[[^\]]*\][ \t]*\n?", re.MULTILINE)
_VERSION = re.compile(r"^version[ \t]*=.*\n", re.MULTILINE)


def move_label(name: str, version: int, label: str, folder: Path = TEMPLATES) -> list[Path]:
    """Give `label` to `name`@`version` and take it off every other version of `name`.

    Only the `labels` line of each file changes (comments and layout stay), and each file
    is replaced whole (write a temporary file, then rename), so a service starting
    meanwhile never reads half a file. The new holder is written first: at every moment
    some version carries the label, so a request for it never fails. Returns the files
    changed.
    """
    files = {f: _read(f) for f in sorted(folder.glob("*.toml"))}
    select(files.values(), name, version=version)  # PromptError: no such prompt or version
    order = sorted(
        (f for f, p in files.items() if p.name == name),
        key=lambda f: files[f].version != version,  # the new holder first
    )
    changed = []
    for f in order:
        p = files[f]
        keep = [lb for lb in p.labels if lb != label]
        labels = [*keep, label] if p.version == version else keep
        if labels != list(p.labels):
            _write_labels(f, labels)
            changed.append(f)
    return changed


def _write_labels(f: Path, labels: list[str]) -> None:
    text = f.read_text()
    line = "labels = [" + ", ".join(f'"{lb}"' for lb in labels) + "]\n"
    if _LABELS.search(text):
        new = _LABELS.sub(lambda _: line, text, count=1)
    else:  # no labels yet: right under the version
        new = _VERSION.sub(lambda m: m.group(0) + line, text, count=1)
    before, after = tomllib.loads(text), tomllib.loads(new)
    if after.get("labels") != labels or {**after, "labels": None} != {**before, "labels": None}:
        raise PromptError(f"{f.name}: could not rewrite its labels line safely; edit it by hand")
    fd, tmp = tempfile.mkstemp(prefix=f".{f.name}.", dir=f.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(new)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, f.stat().st_mode & 0o777)
        os.replace(tmp, f)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
