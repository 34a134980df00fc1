"""Index generations: one set of collections per embedding model, and which one serves.

A new embedding model needs every vector again. Rather than wiping the index,
`freshrag reindex --model` builds a *standby* generation beside the *serving* one: its own
chunks, registry and answer-cache collections, filled from the chunk texts already stored,
then kept current by its own consumer group, so every event reaches both. The switch is
one atomic write of the pointer (a file beside the Edge shards; on a Qdrant server a
record, with the `<collection>__serving` / `__standby` aliases flipped in one request).
The old generation stays current until it is dropped, so switching back is the same
operation. A generation is only ever queried with its own model: the pair travels
together.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from freshrag.errors import GenerationError
from freshrag.files import replace_atomically
from retrieval.encoders import model_label

__all__ = ["GenerationError"]  # with the names below: the pointer's side of blue/green


@dataclass(frozen=True, slots=True)
class Generation:
    name: str  # g1, g2, …
    model: str
    collection: str
    registry: str
    group: str  # its consumer group: events reach every live generation


@dataclass(frozen=True, slots=True)
class Generations:
    serving: Generation
    standby: Generation | None = None
    # The standby's copy is complete; from then on its consumer group keeps it current.
    standby_ready: bool = False

    def with_standby(self, standby: Generation) -> Generations:
        if self.standby is not None:
            raise GenerationError(
                f"generation {self.standby.name} ({model_label(self.standby.model)}) is already on "
                "standby: switch to it or drop it first"
            )
        return Generations(self.serving, standby, False)

    def ready(self) -> Generations:
        return replace(self, standby_ready=True)

    def switched(self) -> Generations:
        """The standby serves; the one that served stays current, on standby."""
        if self.standby is None:
            raise GenerationError("no standby generation: start one with freshrag reindex")
        if not self.standby_ready:
            raise GenerationError(
                f"generation {self.standby.name} is still being built: wait until it is ready"
            )
        return Generations(self.standby, self.serving, True)

    def without_standby(self) -> Generations:
        if self.standby is None:
            raise GenerationError("no standby generation to drop")
        return Generations(self.serving)

    def live(self) -> list[Generation]:
        return [self.serving] + ([self.standby] if self.standby else [])

    def to_json(self) -> dict[str, Any]:
        return {
            "serving": asdict(self.serving),
            "standby": asdict(self.standby) if self.standby else None,
            "standby_ready": self.standby_ready,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Generations:
        standby = raw.get("standby")
        return cls(
            Generation(**raw["serving"]),
            Generation(**standby) if standby else None,
            bool(raw.get("standby_ready")),
        )


def first_generation(settings: Any) -> Generation:
    """What an index made before generations existed is: the configured names and model."""
    return Generation(
        "g1",
        settings.model,
        settings.collection,
        settings.registry_collection,
        settings.consumer_group,
    )


def new_generation(settings: Any, current: Generations, model: str) -> Generation:
    """The next generation's names. Its consumer group is new every time (a dropped
    attempt's committed offsets must not make a later one skip events)."""
    n = 1 + max(int(re.sub(r"\D", "", g.name) or 1) for g in current.live())
    return Generation(
        f"g{n}",
        model,
        f"{settings.collection}__g{n}",
        f"{settings.registry_collection}__g{n}",
        f"{settings.consumer_group}.g{n}.{int(time.time())}",
    )


def model_name(settings: Any, gen: Generation) -> str:
    """What callers are told `gen`'s model is called: FRESHRAG_MODEL_NAME for the model
    FRESHRAG_MODEL names, else its folder's (or hub) name; never a path on this host."""
    named = settings.model_name if gen.model == settings.model else None
    return named or model_label(gen.model)


def generation_settings(settings: Any, gen: Generation) -> Any:
    """The service's settings with this generation's model, collections and group."""
    return settings.model_copy(
        update={
            "model": gen.model,
            "model_name": model_name(settings, gen),
            "collection": gen.collection,
            "registry_collection": gen.registry,
            "consumer_group": gen.group,
        }
    )


@dataclass(frozen=True, slots=True)
class CopyLease:
    """Which process copies a standby build, until when (wall-clock epoch seconds).

    With a Qdrant server every API replica could resume an unfinished copy; the lease
    lets one do it while the others wait, and lets them take over when its holder stops
    renewing it (the process died). `build` is the generation's consumer group, new for
    every reindex, so a lease never carries over to a later build of the same name.
    Replicas' clocks must agree to well within the lease.
    """

    build: str
    owner: str
    until: float


class Pointer(Protocol):
    # Whether other processes read and write the same generations (a Qdrant server); an
    # Edge data dir has one owner (its collection lock), which needs no copy lease.
    shared: bool

    def load(self) -> Generations | None: ...

    def save(self, gens: Generations) -> None: ...

    def load_lease(self) -> CopyLease | None: ...

    def save_lease(self, lease: CopyLease | None) -> None: ...


def claim_copy(
    pointer: Pointer, build: str, owner: str, ttl_s: float, now: float | None = None
) -> CopyLease | None:
    """Takes the copy lease of `build`; the holder's lease if another process holds it
    unexpired (then `owner` must not copy), else None.

    Best effort, not a lock: the store has no compare-and-set, so the write is read back,
    and of two replicas that claim in the same instant the later write wins. If both
    still copy, the copy is idempotent (chunks already there are kept), only slower.
    """
    if not pointer.shared:
        return None
    now = time.time() if now is None else now
    held = pointer.load_lease()
    if held is not None and held.owner != owner and held.build == build and held.until > now:
        return held
    pointer.save_lease(CopyLease(build, owner, now + ttl_s))
    again = pointer.load_lease()
    return None if again is not None and again.owner == owner else again


def renew_copy(
    pointer: Pointer, build: str, owner: str, ttl_s: float, now: float | None = None
) -> bool:
    """Extends `owner`'s lease on `build`; False if it is not (or no longer) theirs."""
    if not pointer.shared:
        return True
    held = pointer.load_lease()
    if held is None or held.owner != owner or held.build != build:
        return False
    pointer.save_lease(CopyLease(build, owner, (time.time() if now is None else now) + ttl_s))
    return True


def release_copy(pointer: Pointer, build: str, owner: str) -> None:
    """Gives the lease up (copy done or stopped) if `owner` still holds it for `build`."""
    if not pointer.shared:
        return
    held = pointer.load_lease()
    if held is not None and held.owner == owner and held.build == build:
        pointer.save_lease(None)


class FilePointer:
    """Edge: a JSON file beside the shards, replaced atomically."""

    shared = False  # one process owns an Edge data dir

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> Generations | None:
        try:
            return Generations.from_json(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return None

    def save(self, gens: Generations) -> None:
        replace_atomically(self.path, json.dumps(gens.to_json(), indent=2))

    def load_lease(self) -> CopyLease | None:
        return None

    def save_lease(self, lease: CopyLease | None) -> None:
        return None


_RECORD_ID = str(uuid.UUID(int=1))
_LEASE_ID = str(uuid.UUID(int=2))


class ServerPointer:
    """Qdrant server: a record point in `<base>__generations` (the model of each
    generation, which an alias cannot carry; a second point holds the copy lease) and aliases `<base>__serving` and
    `<base>__standby` for anything else that reads the collections, flipped together."""

    shared = True  # API replicas and workers in other processes

    def __init__(self, client: Any, base: str) -> None:
        self.client = client
        self.base = base
        self.record = f"{base}__generations"
        self.aliases = (f"{base}__serving", f"{base}__standby")

    def load(self) -> Generations | None:
        if not self.client.collection_exists(self.record):
            return None
        found = self.client.retrieve(self.record, [_RECORD_ID], with_payload=True)
        return Generations.from_json(found[0].payload) if found else None

    def load_lease(self) -> CopyLease | None:
        if not self.client.collection_exists(self.record):
            return None
        found = self.client.retrieve(self.record, [_LEASE_ID], with_payload=True)
        try:
            return CopyLease(**found[0].payload) if found and found[0].payload else None
        except TypeError:
            return None

    def save_lease(self, lease: CopyLease | None) -> None:
        from qdrant_client import models as qm

        self._ensure_record()
        if lease is None:
            self.client.delete(self.record, qm.PointIdsList(points=[_LEASE_ID]), wait=True)
            return
        point = qm.PointStruct(id=_LEASE_ID, vector={}, payload=asdict(lease))
        self.client.upsert(self.record, [point], wait=True)

    def _ensure_record(self) -> None:
        if not self.client.collection_exists(self.record):
            self.client.create_collection(self.record, vectors_config={})

    def save(self, gens: Generations) -> None:
        from qdrant_client import models as qm

        self._ensure_record()
        self.client.upsert(
            self.record,
            [qm.PointStruct(id=_RECORD_ID, vector={}, payload=gens.to_json())],
            wait=True,
        )
        existing = {a.alias_name for a in self.client.get_aliases().aliases}
        ops: list[Any] = [
            qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=a))
            for a in self.aliases
            if a in existing
        ]
        for alias, gen in zip(self.aliases, (gens.serving, gens.standby), strict=True):
            if gen is not None:
                ops.append(
                    qm.CreateAliasOperation(
                        create_alias=qm.CreateAlias(
                            collection_name=gen.collection, alias_name=alias
                        )
                    )
                )
        self.client.update_collection_aliases(change_aliases_operations=ops)

    def serving_alias(self) -> str | None:
        """The collection `<base>__serving` points at (what other readers see)."""
        for a in self.client.get_aliases().aliases:
            if a.alias_name == self.aliases[0]:
                return a.collection_name
        return None


def open_pointer(settings: Any, client: Any = None) -> Pointer:
    if settings.qdrant_url or client is not None:
        if client is None:
            from qdrant_client import QdrantClient

            client = QdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key)
        return ServerPointer(client, settings.collection)
    return FilePointer(settings.data_dir / "edge" / f"{settings.collection}.generations.json")
