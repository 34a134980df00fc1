"""Temporary re-exports of `retrieval.store.server`; import from there."""

from retrieval.store.server import ServerIndex as ServerIndex
from retrieval.store.server import to_server_filter as to_server_filter
