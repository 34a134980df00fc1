"""Temporary re-export of `retrieval.store.factory`; import from there."""

from retrieval.store.factory import open_index as open_index
