"""Evaluation: the field's ranking metrics (exact, chunked) and retrieval evaluation of a model."""

from ssan.evaluation._compiled import set_rank_kernel
from ssan.evaluation.evaluator import RetrievalEvaluator, evaluate, evaluate_checkpoint
from ssan.evaluation.metrics import DEFAULT_KS, RankMetricAccumulator, query_metrics, rank_metrics
from ssan.evaluation.report import format_metrics_table
from ssan.evaluation.retrieval import encode_gallery, encode_queries, evaluate_features, resolve_device, similarity_rows

__all__ = [
    "DEFAULT_KS",
    "RankMetricAccumulator",
    "RetrievalEvaluator",
    "encode_gallery",
    "encode_queries",
    "evaluate",
    "evaluate_checkpoint",
    "evaluate_features",
    "format_metrics_table",
    "query_metrics",
    "rank_metrics",
    "resolve_device",
    "set_rank_kernel",
    "similarity_rows",
]
