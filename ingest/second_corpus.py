"""A second evaluation corpus: the `doc/` folder of a pinned Sphinx release, from its PyPI sdist.

Every quality choice so far was made on the Django sample, so a gain measured only there
may be a gain on Django. Sphinx's documentation is another product's reST prose (user
guide, tutorial, extension API, command-line tools), of another domain, small enough to
index in about a minute: 105 pages, about 1,300 chunks at the default 192-token chunks.
Its release notes (`doc/changes/`, 48 pages, a third of the text once chunked) are left
out: they would dominate the index with version lists nobody asks about.

Doc ids mirror the Django sample's: `sphinx/` + the path under `doc/`, e.g.
`sphinx/usage/configuration.rst`. The question set written for it is
`evals/datasets/sphinx-9.0.4.v1.jsonl`.
"""

from __future__ import annotations

from pathlib import Path

from ingest.events import DocumentEvent
from ingest.sample import sdist_folder

__all__ = ["corpus_events", "doc_files", "doc_id", "sdist_folder", "sphinx_docs"]

NAME = "sphinx"
VERSION = "9.0.4"  # pinned: the question set was checked against this release's pages
PREFIX = "sphinx/"
MIME = "text/x-rst"
_DOCS = "doc"
_RELEASE_NOTES = "changes"
# Not pages of the manual: Sphinx's build internals, and (unless asked for) the release notes.
_SKIP = {"_static", "_templates", "_themes", _RELEASE_NOTES}


def sphinx_docs(cache_dir: Path, version: str = VERSION) -> Path:
    """The Sphinx docs folder, fetched once into `cache_dir` (the Django sample's cache)."""
    return sdist_folder(NAME, version, _DOCS, cache_dir)


def doc_files(docs: Path, release_notes: bool = False) -> list[Path]:
    """The manual's reST pages, sorted; release notes only when asked for."""
    skip = _SKIP - ({_RELEASE_NOTES} if release_notes else set())
    return sorted(p for p in docs.rglob("*.rst") if not skip & set(p.relative_to(docs).parts))


def doc_id(path: Path, docs: Path) -> str:
    """'…/doc/usage/configuration.rst' → 'sphinx/usage/configuration.rst'."""
    return PREFIX + path.relative_to(docs).as_posix()


def corpus_events(docs: Path, files: list[Path], version: int = 1) -> list[DocumentEvent]:
    """The pages as reST events under their doc ids, as the benchmarks publish the sample."""
    from ingest.publisher import build_events

    return build_events(files, root=docs, mime=MIME, prefix=PREFIX, version=version)
