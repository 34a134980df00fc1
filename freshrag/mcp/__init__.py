"""`freshrag mcp`: FreshRAG's search, answers and documents for agents that speak the
Model Context Protocol, over stdio or streamable HTTP.

A thin adapter over the running HTTP API through `freshrag_client`: every call is an API
request with the caller's own key, so what a key may read is decided in one place, the
API. Needs the `mcp` extra (`pip install 'freshrag[mcp]'`).
"""
