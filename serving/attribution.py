"""Per-prediction feature contributions by path attribution, cheap enough for every request and every batch row.

TreeSHAP (LightGBM's ``pred_contrib``) costs 0.22–0.34 ms per row for the models trained on the
default simulation (``make bench``; ~6.6 ms for the larger model of ``shared/PERF-NOTES.md``): minutes
to an hour for a million customers. Path attribution ("Saabas") walks each tree's root→leaf path
once, at load time, and credits every split on it with ``value(child) − value(parent)`` for the
split's feature. A row's contributions are then the sum, over trees, of the per-leaf credits of the
leaves it lands in: a sparse matrix product, ~0.01 ms per row in a batch. They add up exactly to the
raw score minus :attr:`PathAttribution.bias` (the sum of the trees' root values), so they explain the
same log-odds the model scored; TreeSHAP's differ by a constant base and by how interactions are
shared, and :func:`agreement` measures how often the two pick the same top reasons.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import scipy.sparse as sp


GATHER_ROWS = 64  # up to this many rows, credit() gathers table rows; beyond, one sparse product


@dataclass(frozen=True)
class PathAttribution:
    """The per-leaf credit table of one booster (first ``num_iteration`` trees)."""

    num_iteration: int
    n_features: int
    tree_offsets: np.ndarray  # (T,) index of each tree's leaf 0 in the global leaf axis
    leaf_credit: sp.csr_matrix  # (L, F) credit of every leaf's path to every feature
    bias: float  # Σ over trees of the root value: the raw score of a row credited with nothing

    @classmethod
    def from_booster(cls, booster: lgb.Booster, num_iteration: int) -> PathAttribution:
        """The credit table of ``booster``'s first ``num_iteration`` trees (built once per model, ~0.4 s)."""
        dump = booster.dump_model(num_iteration=num_iteration)
        n_features = len(dump["feature_names"])
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        offsets = []
        bias = 0.0
        n_leaves = 0
        for tree in dump["tree_info"][:num_iteration]:
            offsets.append(n_leaves)
            root = tree["tree_structure"]
            if "leaf_value" in root:  # a tree that never split: a constant, all bias
                bias += root["leaf_value"]
                n_leaves += 1
                continue
            bias += root["internal_value"]
            # Iterative walk: (node, path credits so far as {feature: credit}).
            stack = [(root, {})]
            while stack:
                node, credit = stack.pop()
                if "leaf_index" in node:
                    leaf = n_leaves + node["leaf_index"]
                    for f, c in credit.items():
                        rows.append(leaf)
                        cols.append(f)
                        vals.append(c)
                    continue
                f = node["split_feature"]
                for child in (node["left_child"], node["right_child"]):
                    value = child["leaf_value"] if "leaf_index" in child else child["internal_value"]
                    step = dict(credit)
                    step[f] = step.get(f, 0.0) + value - node["internal_value"]
                    stack.append((child, step))
            n_leaves += tree["num_leaves"]
        table = sp.csr_matrix((vals, (rows, cols)), shape=(n_leaves, n_features), dtype=np.float64)
        return cls(num_iteration, n_features, np.asarray(offsets, dtype=np.int64), table, float(bias))

    def contributions(self, booster: lgb.Booster, X: np.ndarray, num_threads: int = 1) -> np.ndarray:
        """(rows × features) log-odds credits; ``contributions(X).sum(1) + bias`` is the raw score."""
        leaves = booster.predict(X, pred_leaf=True, num_iteration=self.num_iteration, num_threads=num_threads)
        return self.credit(np.asarray(leaves, dtype=np.int64).reshape(len(X), -1))

    def credit(self, leaves: np.ndarray) -> np.ndarray:
        """(rows × features) credits of rows that fell in ``leaves`` (rows × trees, per-tree leaf indices,
        as ``Booster.predict(pred_leaf=True)`` gives them)."""
        leaves = leaves + self.tree_offsets
        n, t = leaves.shape
        table = self.leaf_credit
        if n > GATHER_ROWS:
            hits = sp.csr_matrix((np.ones(n * t), leaves.ravel(), np.arange(0, n * t + 1, t)), shape=(n, table.shape[0]))
            return (hits @ table).toarray()
        # A request's row or few: gather the table rows of the leaves hit (a few credits per leaf, one per
        # feature on its path) and add them up by (row, feature). Touches ~T × depth numbers, not T × F.
        flat = leaves.ravel()
        starts = table.indptr[flat]
        lengths = table.indptr[flat + 1] - starts
        ends = np.cumsum(lengths)
        pos = np.arange(ends[-1] if len(ends) else 0) + np.repeat(starts - (ends - lengths), lengths)
        row = np.repeat(np.arange(n).repeat(t), lengths)
        return np.bincount(row * self.n_features + table.indices[pos], weights=table.data[pos],
                           minlength=n * self.n_features).reshape(n, self.n_features)


def top_features(contributions: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(indices, credits) of each row's ``k`` largest positive credits, largest first; index -1 where
    a row has fewer than ``k`` features pushing its score up."""
    k = min(k, contributions.shape[1])
    if len(contributions) == 1:  # a request's one row: a plain sort is a third of the calls below
        idx = np.argsort(-contributions[0], kind="stable")[None, :k]
        credit = contributions[0, idx[0]][None]
        return np.where(credit > 0, idx, -1), np.where(credit > 0, credit, 0.0)
    part = np.argpartition(-contributions, k - 1, axis=1)[:, :k]
    credit = np.take_along_axis(contributions, part, axis=1)
    order = np.argsort(-credit, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    credit = np.take_along_axis(credit, order, axis=1)
    idx = np.where(credit > 0, idx, -1)
    return idx, np.where(credit > 0, credit, 0.0)


def agreement(attribution: PathAttribution, booster: lgb.Booster, X: np.ndarray, k: int = 3,
              min_credit: float = 0.0) -> dict[str, float]:
    """How often path attribution's top reasons are TreeSHAP's, over the rows of ``X``.

    ``top1_match``: same top feature; ``top1_in_shap_topk``: path attribution's top feature is among
    TreeSHAP's top ``k``; ``topk_overlap``: mean share of the two top-``k`` sets in common (reasons
    are features pushing the score *up*, as served). The ``material_*`` figures are the same over the
    rows whose top path credit is at least ``min_credit`` (the rows that get a reason when served with
    ``serving.min_reason_credit``): where nothing pushes a score up by much, the two methods rank
    tiny credits differently. Also the largest error of the path credits' sum against the raw score,
    which should be float rounding.
    """
    path = attribution.contributions(booster, X)
    shap = booster.predict(X, pred_contrib=True, num_iteration=attribution.num_iteration)[:, :-1]
    raw = booster.predict(X, raw_score=True, num_iteration=attribution.num_iteration)
    p_idx, p_credit = top_features(path, k)
    s_idx, _ = top_features(shap, k)
    has = (p_idx[:, 0] >= 0) & (s_idx[:, 0] >= 0)
    top1 = p_idx[:, 0] == s_idx[:, 0]
    in_topk = (p_idx[:, :1] == s_idx).any(axis=1)
    overlap = np.array([
        len(set(a[a >= 0]) & set(b[b >= 0])) / max(1, min((a >= 0).sum(), (b >= 0).sum()))
        for a, b in zip(p_idx, s_idx, strict=True)
    ])
    material = has & (p_credit[:, 0] >= min_credit)
    return {
        "rows": int(has.sum()),
        "top1_match": float(top1[has].mean()),
        "top1_in_shap_topk": float(in_topk[has].mean()),
        "topk_overlap": float(overlap[has].mean()),
        "min_credit": float(min_credit),
        "material_rows": int(material.sum()),
        "material_top1_match": float(top1[material].mean()) if material.any() else float("nan"),
        "material_top1_in_shap_topk": float(in_topk[material].mean()) if material.any() else float("nan"),
        "max_sum_error": float(np.max(np.abs(path.sum(axis=1) + attribution.bias - raw))),
    }
