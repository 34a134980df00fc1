import pytest

from ingest.chunker import Chunker, content_hash
from ingest.parser import Element

pytestmark = pytest.mark.unit

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


def test_parser_version_and_chunk_settings_give_every_chunk_a_new_identity():
    els = elements(SECTIONS)
    before = Chunker(chunk_size=128, parser_version="1").chunk(els)
    upgraded = Chunker(chunk_size=128, parser_version="2").chunk(els)
    assert [c.text for c in before] == [c.text for c in upgraded], "same text, ..."
    assert not {c.hash for c in before} & {c.hash for c in upgraded}, "... all-new ids"
    resized = Chunker(chunk_size=129, parser_version="1").chunk(els)
    assert not {c.hash for c in before} & {c.hash for c in resized}


def test_no_chunk_is_only_a_title():
    chunks = Chunker(chunk_size=128).chunk(elements(SECTIONS) + [Element("Title", "Appendix")])
    assert len(chunks) == len(SECTIONS), "bare document title and trailing heading: no chunks"
    for c in chunks:
        assert [x for x in c.text.splitlines() if x and not x.startswith("## ")], c.text
    assert chunks[0].text.startswith("## Guide\n\n## Installing\n\nInstall the package")
    assert chunks[0].section == "Installing"


def test_code_is_never_a_heading_and_stays_fenced_when_split():
    code = "\n".join(f"# step {i}\nvalue_{i} = compute({i})" for i in range(60))
    chunks = Chunker(chunk_size=64).chunk(
        [
            Element("Title", "Recipe"),
            Element("NarrativeText", "Run this:"),
            Element("CodeSnippet", code),
            Element("NarrativeText", "Then check the output."),
        ]
    )
    assert len(chunks) > 3
    assert {c.section for c in chunks} == {"Recipe"}
    for c in chunks:
        assert c.text.startswith("## Recipe\n\n")
        assert c.text.count("```") % 2 == 0, c.text  # every code part is fenced
    kept = "\n".join(
        line for c in chunks for line in c.text.splitlines() if line.startswith(("# ", "value_"))
    )
    assert kept == code, "every code line, once, in order"


def test_overlap_repeats_the_previous_chunks_tail():
    paras = [Element("NarrativeText", f"Paragraph {i} is about topic {i}.") for i in range(30)]
    chunks = Chunker(chunk_size=48, chunk_overlap=12).chunk([Element("Title", "T"), *paras])
    assert len(chunks) > 3
    for a, b in zip(chunks, chunks[1:], strict=False):
        last = a.text.split("\n\n")[-1]
        assert last in b.text


def test_a_document_of_only_a_heading_still_has_its_text():
    """A one-line PDF comes back as a single Title element: it must not vanish."""
    chunks = Chunker(128, 0).chunk([Element("Title", "Quarterly okapi census")])
    assert [c.text for c in chunks] == ["Quarterly okapi census"]


def test_a_chunk_is_encoded_with_the_headings_above_its_section():
    els = [
        Element("Title", "Model field reference", 1),
        Element("NarrativeText", "Fields and their options."),
        Element("Title", "Field options", 2),
        Element("NarrativeText", "Options every field takes."),
        Element("Title", "null", 3),
        Element("NarrativeText", "If True, empty values are stored as NULL."),
        Element("Title", "Field types", 2),
        Element("NarrativeText", "The built-in fields."),
    ]
    chunks = Chunker(128).chunk(els)
    assert [c.path for c in chunks] == [
        (),
        ("Model field reference",),
        ("Model field reference", "Field options"),
        ("Model field reference",),  # a sibling of "Field options", not its child
    ]
    null = chunks[2]
    assert null.text == "## null\n\nIf True, empty values are stored as NULL."  # stored as written
    assert null.indexed_text == f"Model field reference › Field options\n\n{null.text}"
    assert chunks[0].indexed_text == chunks[0].text  # the title's own section needs no header

    # The header is part of what is embedded, so renaming a parent re-embeds its children.
    renamed = Chunker(128).chunk([els[0], els[1], Element("Title", "Options", 2), *els[3:]])
    assert renamed[2].text == null.text and renamed[2].hash != null.hash
    assert renamed[0].hash == chunks[0].hash and renamed[3].hash == chunks[3].hash

    plain = Chunker(128, headers=False).chunk(els)
    assert all(c.indexed_text == c.text for c in plain)
    assert plain[2].hash != null.hash  # a settings change never mixes old and new vectors


def test_another_embedding_model_never_reuses_a_chunk_vector():
    """Vectors are reused by chunk hash, so the hash must differ per model."""
    els = elements(SECTIONS)
    mini = Chunker(128, model="all-MiniLM-L6-v2").chunk(els)
    mpnet = Chunker(128, model="all-mpnet-base-v2").chunk(els)
    assert [c.text for c in mini] == [c.text for c in mpnet]
    assert not {c.hash for c in mini} & {c.hash for c in mpnet}
