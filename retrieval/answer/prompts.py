"""Versioned prompt templates (files in `prompt_templates/`), picked by name, label or version."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

TEMPLATES = Path(__file__).with_name("prompt_templates")
DEFAULT_NAME = "grounded-answer"
DEFAULT_LABEL = "production"
REFUSAL = "I don't know based on the provided sources."


class PromptError(ValueError):
    """Unknown prompt or a template that does not render; the API answers 4xx."""


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


class PromptRegistry:
    def __init__(self, prompts: list[Prompt]) -> None:
        self.prompts = sorted(prompts, key=lambda p: (p.name, p.version))

    @classmethod
    def load(cls, folder: Path = TEMPLATES) -> PromptRegistry:
        prompts = []
        for f in sorted(folder.glob("*.toml")):
            d = tomllib.loads(f.read_text())
            prompts.append(
                Prompt(
                    d["name"],
                    int(d["version"]),
                    tuple(d.get("labels", [])),
                    d["system"],
                    d["user"],
                    d.get("description", ""),
                )
            )
        return cls(prompts)

    def resolve(
        self, name: str | None = None, label: str | None = None, version: int | None = None
    ) -> Prompt:
        name = name or DEFAULT_NAME
        candidates = [p for p in self.prompts if p.name == name]
        if not candidates:
            known = ", ".join(sorted({p.name for p in self.prompts}))
            raise PromptError(f"unknown prompt '{name}'; known: {known}")
        if version is not None:
            for p in candidates:
                if p.version == version:
                    return p
            raise PromptError(f"prompt '{name}' has no version {version}")
        label = label or DEFAULT_LABEL
        labelled = [p for p in candidates if label in p.labels]
        if not labelled:
            raise PromptError(f"prompt '{name}' has no version labelled '{label}'")
        return labelled[-1]
