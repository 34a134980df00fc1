"""One module per source format, each turning a document into `Element`s.

`ingest.parser.parse` picks the module by MIME type: reST and Markdown are walked
directly (docutils doctree, markdown-it tokens); HTML, plain text, PDF and DOCX go
through unstructured.
"""
