"""The second evaluation corpus: Sphinx's docs from its sdist, unpacked once and listed.

The fetcher is checked offline on a small sdist built here (an sdist already in the cache
is never downloaded again); the real listing only when the pinned sdist is cached.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from ingest.second_corpus import (
    PREFIX,
    VERSION,
    corpus_events,
    doc_files,
    doc_id,
    sdist_folder,
    sphinx_docs,
)

pytestmark = pytest.mark.unit

CACHE = Path(__file__).resolve().parents[2] / "data" / "samples"

FILES = {
    "doc/index.rst": "Index\n=====\n\nHello.\n",
    "doc/usage/quickstart.rst": "Quickstart\n==========\n\nRun it.\n",
    "doc/changes/9.0.rst": "Release 9.0\n===========\n\nNotes.\n",
    "doc/_templates/page.rst": "not a page\n",
    "doc/conf.py": "project = 'x'\n",
    "sphinx/__init__.py": "",
}


def fake_sdist(cache: Path, version: str) -> Path:
    path = cache / f"sphinx-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in FILES.items():
            data = text.encode()
            info = tarfile.TarInfo(f"sphinx-{version}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_cached_sdist_is_unpacked_once_and_only_its_docs(tmp_path):
    sdist = fake_sdist(tmp_path, "0.0.1")
    docs = sphinx_docs(tmp_path, "0.0.1")
    assert docs == tmp_path / "sphinx-0.0.1" / "doc"
    assert not (tmp_path / "sphinx-0.0.1" / "sphinx").exists()  # the code stays packed
    sdist.unlink()  # a second call needs neither the sdist nor the network
    assert sphinx_docs(tmp_path, "0.0.1") == docs


def test_listing_skips_release_notes_and_build_internals_unless_asked(tmp_path):
    fake_sdist(tmp_path, "0.0.1")
    docs = sphinx_docs(tmp_path, "0.0.1")
    assert [doc_id(p, docs) for p in doc_files(docs)] == [
        "sphinx/index.rst",
        "sphinx/usage/quickstart.rst",
    ]
    assert "sphinx/changes/9.0.rst" in [doc_id(p, docs) for p in doc_files(docs, True)]
    [first, _] = corpus_events(docs, doc_files(docs))
    assert (first.doc_id, first.mime, first.version) == ("sphinx/index.rst", "text/x-rst", 1)
    assert first.content.startswith("Index")


def test_an_sdist_without_the_folder_says_so(tmp_path):
    fake_sdist(tmp_path, "0.0.2")
    with pytest.raises(FileNotFoundError, match="no docs/ folder"):
        sdist_folder("sphinx", "0.0.2", "docs", tmp_path)


@pytest.mark.skipif(
    not (CACHE / f"sphinx-{VERSION}.tar.gz").exists(),
    reason=f"the Sphinx {VERSION} sdist is not cached in {CACHE} "
    "(python -c 'from ingest.second_corpus import sphinx_docs; ...' fetches it once)",
)
def test_the_pinned_release_lists_its_manual():
    docs = sphinx_docs(CACHE)
    ids = [doc_id(p, docs) for p in doc_files(docs)]
    assert len(ids) == 105 and len(doc_files(docs, release_notes=True)) == 153
    assert all(i.startswith(PREFIX) for i in ids) and not any("/changes/" in i for i in ids)
    assert {"sphinx/usage/configuration.rst", "sphinx/tutorial/index.rst"} <= set(ids)
