"""Storage: the contract the rest of the service speaks, and the two Qdrant backends.

`types` (values and ids), `schema` (vectors and payload indexes), `ports` (the narrow
protocols callers depend on), `base` (what both adapters do alike), `server` (a Qdrant
server through qdrant-client), `edge/` (Qdrant Edge in-process) and `factory` (picks one).
"""
