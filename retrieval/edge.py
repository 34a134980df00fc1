"""Temporary re-exports of `retrieval.store.edge`; import from its modules."""

from retrieval.store.edge.adapter import EdgeIndex as EdgeIndex
from retrieval.store.edge.filters import to_edge_filter as to_edge_filter
from retrieval.store.edge.layout import StateUnreadable as StateUnreadable
from retrieval.store.edge.lock import ShardBusy as ShardBusy
from retrieval.store.edge.optimizer import EdgeOptimizer as EdgeOptimizer
from retrieval.store.edge.optimizer import OptimizerStopped as OptimizerStopped
from retrieval.store.edge.tuning import EdgeTuning as EdgeTuning
from retrieval.store.edge.tuning import chunks_config as chunks_config
from retrieval.store.edge.tuning import search_params as search_params
from retrieval.store.edge.upgrade import upgrade_offline as upgrade_offline
from retrieval.store.edge.warming import warm_order as warm_order
from retrieval.store.schema import DENSE as DENSE
