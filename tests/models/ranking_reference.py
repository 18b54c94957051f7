"""A small pure-Python reference for the offline metrics (one user at a time, lists and sets only).

Written from the definitions in models/metrics.py's docstring, independently of the Spark code, so the two can
be checked against each other on hand-made cases.
"""
from __future__ import annotations

import math


def precision_at(recs: list, relevant: set, k: int) -> float:
    return sum(1 for item in recs[:k] if item in relevant) / k


def recall_at(recs: list, relevant: set, k: int) -> float:
    return sum(1 for item in recs[:k] if item in relevant) / len(relevant)


def ndcg_at(recs: list, relevant: set, k: int) -> float:
    dcg = sum(1 / math.log2(pos + 2) for pos, item in enumerate(recs[:k]) if item in relevant)
    idcg = sum(1 / math.log2(pos + 2) for pos in range(min(len(relevant), k)))
    return dcg / idcg


def map_at(recs: list, relevant: set, k: int) -> float:
    hits, total = 0, 0.0
    for pos, item in enumerate(recs[:k]):
        if item in relevant:
            hits += 1
            total += hits / (pos + 1)
    return total / min(len(relevant), k)


def hit_rate_at(recs: list, relevant: set, k: int) -> float:
    return 1.0 if any(item in relevant for item in recs[:k]) else 0.0


def mean_metrics(recs_by_user: dict, relevant_by_user: dict, k: int) -> dict:
    """Averages over users with at least one relevant item; a user without recommendations scores 0."""
    users = [u for u, rel in relevant_by_user.items() if rel]
    out = {}
    for name, fn in (("ndcg", ndcg_at), ("precision", precision_at), ("recall", recall_at), ("map", map_at),
                     ("hit_rate", hit_rate_at)):
        out[f"{name}@{k}"] = sum(fn(recs_by_user.get(u, []), relevant_by_user[u], k) for u in users) / len(users)
    return out


def rmse(pairs: list[tuple[float, float]]) -> float:
    return math.sqrt(sum((p - y) ** 2 for p, y in pairs) / len(pairs))


def mae(pairs: list[tuple[float, float]]) -> float:
    return sum(abs(p - y) for p, y in pairs) / len(pairs)
