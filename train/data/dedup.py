"""Duplicate grouping: exact (same bytes) and near (perceptual hash within a Hamming distance).

A split leaks when the same photo lands in train and test, which is why grouping is transitive
(A~B and B~C puts A, B and C in one group even if A and C differ more than the threshold): a
group is then the unit a split assigns as a whole.

Near pairs come from an all-pairs comparison of 64-bit perceptual hashes, vectorised in blocks
over a uint64 array (XOR + popcount). That is O(n^2) but with tiny constants: 10k images take
well under a second, and it finds every pair (a prefix-bucket index would miss some).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Elements of one block's distance matrix: bounds memory (8 bytes each) whatever the dataset size.
_BLOCK_ELEMENTS = 4_000_000
_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def phash_array(hexes: Sequence[str]) -> np.ndarray:
    """16-hex-digit perceptual hashes -> uint64 array."""
    return np.array([int(h, 16) for h in hexes], dtype=np.uint64)


def popcount64(x: np.ndarray) -> np.ndarray:
    """Number of set bits of each uint64 (numpy >= 2 has it built in; a byte table otherwise)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.uint8)
    return popcount64_table(x)


def popcount64_table(x: np.ndarray) -> np.ndarray:
    as_bytes = np.ascontiguousarray(x, dtype=np.uint64).view(np.uint8).reshape(*np.shape(x), 8)
    return _POP8[as_bytes].sum(axis=-1, dtype=np.uint8)


def near_pairs(hashes: np.ndarray, threshold: int) -> np.ndarray:
    """All index pairs (i < j) whose hashes differ in at most ``threshold`` bits, shape (k, 2)."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(hashes)
    found = []
    if threshold < 0 or n < 2:
        return np.empty((0, 2), dtype=np.int64)
    step = max(1, min(1024, _BLOCK_ELEMENTS // n))
    for start in range(0, n, step):
        block = hashes[start : start + step]
        # Compare the block with itself and everything after it only: each pair once.
        dist = popcount64(block[:, None] ^ hashes[None, start:])
        i, j = np.nonzero(dist <= threshold)
        keep = j > i  # j indexes from ``start``; i < j drops self and mirrored pairs
        found.append(np.stack([i[keep] + start, j[keep] + start], axis=1))
    return np.concatenate(found).astype(np.int64) if found else np.empty((0, 2), dtype=np.int64)


class UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:  # path compression
            self.parent[a], a = root, self.parent[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def group_indices(shas: Sequence[str], phashes: Sequence[str], threshold: int) -> list[int]:
    """Group root (smallest member index) of every item: same sha256, or phash within threshold."""
    n = len(shas)
    uf = UnionFind(n)
    first: dict[str, int] = {}
    for i, sha in enumerate(shas):
        if sha in first:
            uf.union(first[sha], i)
        else:
            first[sha] = i
    if threshold >= 0 and n > 1:
        for i, j in near_pairs(phash_array(phashes), threshold):
            uf.union(int(i), int(j))
    return [uf.find(i) for i in range(n)]


def group_ids(shas: Sequence[str], phashes: Sequence[str], threshold: int) -> list[str]:
    """A stable id per item: ``g`` + the first 16 hex digits of the smallest sha256 in its group.

    Stable means that re-importing the same files gives the same ids, whatever their order.
    """
    roots = group_indices(shas, phashes, threshold)
    best: dict[int, str] = {}
    for i, r in enumerate(roots):
        if r not in best or shas[i] < best[r]:
            best[r] = shas[i]
    return [f"g{best[r][:16]}" for r in roots]


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()
