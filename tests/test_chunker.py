from ingest.chunker import Chunker, content_hash
from ingest.parser import Element

SECTIONS = [
    ("Installing", "Install the package with pip. It needs Python 3.11 or newer to run well."),
    ("Configuring", "Set the environment variables before starting. Each has a sane default."),
    ("Running", "Start the service with one command. It prints the URL and an example."),
    ("Upgrading", "Read the release notes first. Then upgrade the package and restart."),
]


def elements(sections):
    out = [Element("Title", "Guide")]
    for title, body in sections:
        out += [Element("Title", title), Element("NarrativeText", body)]
    return out


def test_sections_become_chunks_with_their_heading():
    chunks = Chunker(chunk_size=128).chunk(elements(SECTIONS))
    texts = [c.text for c in chunks]
    assert any(t.startswith("## Running") and "one command" in t for t in texts)
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_editing_one_section_changes_only_its_chunk():
    before = Chunker(chunk_size=128).chunk(elements(SECTIONS))
    edited = list(SECTIONS)
    edited[2] = ("Running", "Start the service with make up. It prints the URL and an example.")
    after = Chunker(chunk_size=128).chunk(elements(edited))
    changed = {c.hash for c in after} - {c.hash for c in before}
    assert len(changed) == 1
    assert len(after) == len(before)


def test_long_sections_are_split_and_duplicates_get_distinct_hashes():
    long = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(200))
    chunks = Chunker(chunk_size=64).chunk([Element("Title", "A"), Element("NarrativeText", long)])
    assert len(chunks) > 5
    dup = Chunker(chunk_size=64).chunk(
        [
            Element("Title", "A"),
            Element("NarrativeText", "same"),
            Element("Title", "A"),
            Element("NarrativeText", "same"),
        ]
    )
    assert len(dup) == 2 and dup[0].hash != dup[1].hash


def test_hash_ignores_whitespace_only_changes():
    assert content_hash("a  b\nc") == content_hash("a b c")


def test_empty_document_has_no_chunks():
    assert Chunker().chunk([]) == []
