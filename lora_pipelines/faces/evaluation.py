"""Same-person vs different-person separation of face embeddings (numpy only)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

from lora_pipelines.faces.embeddings import face_distance


def pair_distances(embeddings: Sequence[np.ndarray], identities: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Distances of every pair of faces, split into (same person, different people)."""
    if len(embeddings) != len(identities):
        raise ValueError(f"{len(embeddings)} embeddings but {len(identities)} identities")
    same, different = [], []
    for (e1, id1), (e2, id2) in itertools.combinations(zip(embeddings, identities, strict=True), 2):
        (same if id1 == id2 else different).append(face_distance(e1, e2))
    return np.array(same), np.array(different)


def separation_auc(same_distances: Sequence[float], different_distances: Sequence[float]) -> float:
    """Probability that a random same-person pair is closer than a random different-person pair (ties count half).

    Mann-Whitney U from average ranks: rank all distances ascending, AUC = (R_diff - n_d(n_d+1)/2) / (n_s n_d).
    """
    same = np.asarray(same_distances, dtype=np.float64)
    different = np.asarray(different_distances, dtype=np.float64)
    if same.size == 0 or different.size == 0:
        raise ValueError("AUC needs at least one same-person and one different-person pair")
    values = np.concatenate([same, different])
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.arange(1, values.size + 1)
    # average the ranks of tied values
    unique, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    if unique.size != values.size:
        sums = np.bincount(inverse, weights=ranks)
        ranks = (sums / counts)[inverse]
    rank_sum_different = ranks[same.size :].sum()
    u = rank_sum_different - different.size * (different.size + 1) / 2
    return float(u / (same.size * different.size))


def pair_scores(
    embeddings: Sequence[np.ndarray], identities: Sequence[str], score: Callable[[np.ndarray, np.ndarray], float]
) -> tuple[np.ndarray, np.ndarray]:
    """score() of every pair of faces, split into (same person, different people)."""
    if len(embeddings) != len(identities):
        raise ValueError(f"{len(embeddings)} embeddings but {len(identities)} identities")
    same, different = [], []
    for (e1, id1), (e2, id2) in itertools.combinations(zip(embeddings, identities, strict=True), 2):
        (same if id1 == id2 else different).append(score(e1, e2))
    return np.array(same), np.array(different)


def calibrate_threshold(
    same_scores: Sequence[float], different_scores: Sequence[float], *, higher_is_same: bool
) -> float:
    """The cut between two observed scores that maximises (same-person match rate + different rejection rate) / 2.

    When the two sets do not overlap, that is the middle of the gap between them.
    """
    sign = 1.0 if higher_is_same else -1.0
    same = sign * np.asarray(same_scores, dtype=np.float64)
    different = sign * np.asarray(different_scores, dtype=np.float64)
    if same.size == 0 or different.size == 0:
        raise ValueError("calibration needs at least one same-person and one different-person pair")
    values = np.unique(np.concatenate([same, different]))
    if values.size < 2:
        raise ValueError("calibration needs at least two distinct scores")
    cuts = (values[:-1] + values[1:]) / 2
    matched = (same[None, :] >= cuts[:, None]).mean(axis=1)
    rejected = (different[None, :] < cuts[:, None]).mean(axis=1)
    return float(sign * cuts[np.argmax(matched + rejected)])
