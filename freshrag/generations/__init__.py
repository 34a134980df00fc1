"""Blue/green index generations: one set of collections per embedding model.

- `pointer`: which generation serves and which is on standby, stored beside the Edge
  shards or as a record (and aliases) on a Qdrant server; the copy lease.
- `copier`: fills a standby from the chunk texts the serving generation already holds.
- `controller`: the `Deployment` a process runs: its generations' cores and workers,
  the copy, the switch and the drop, following the pointer other replicas move.
"""
