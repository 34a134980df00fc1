"""Corpus-adapted embedding models (`freshrag tune`): pairs mined from the index's own
structure, a niced training child, a model folder with its card."""
