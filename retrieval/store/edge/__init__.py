"""Qdrant Edge adapter: the Qdrant engine in-process, one shard directory per collection.

A shard belongs to one process, so in embedded mode the worker and the API share it.

Keeping the chunks shard fast as it grows. Edge builds HNSW graphs, merges segments and
vacuums deleted points only inside `EdgeShard.optimize()`, and that call (like every Edge
call) holds the GIL until it returns: run in a thread of this process it freezes every
query and write for its whole duration (seconds at 30k points, minutes at 500k). A second
process cannot open a live shard either (its WAL is locked). So optimisation runs in a
short-lived child process on a *spare* copy of the shard, and the copies take turns:

    live dir (serving)  ◄── writes, each also appended to an op log
    spare dir (child)   ◄── the child replays the op log, optimize(), replays the tail,
                            closes it and reads its files back into the page cache
    swap (this process) ──► load the spare, replay the last few logged writes into it,
                            make it live; the old live dir becomes the spare

Queries stop only while the warm spare is loaded and the old shard closed (both hold
the GIL), writes also while the last few logged writes are replayed; `bench.scale`
measures these pauses at 100k–1M points.
The live dir name is kept in `<collection>.edge-state.json`; without that file the shard is
`<collection>/` as before, so existing shards keep loading.

Modules, one concern each: `adapter` (EdgeIndex, the ports), `points` (a shard as the
shared code reaches it), `answers` (the answer cache's shard), `filters` (neutral
conditions → Edge filters), `tuning` (EdgeTuning and the chunks shard's config), `lock`
(one owner per collection), `layout` (dirs and the state file), `oplog` (writes as
replayable records), `shards` (live and spare shards and their swap), `optimizer` (the
background thread) and `child` (its child process, `python -m retrieval.store.edge.child`),
`rebuild` (indexing a shard a step at a time), `warming` (page-cache warm-up) and
`upgrade` (the offline rebuild behind `freshrag optimize`).
"""
