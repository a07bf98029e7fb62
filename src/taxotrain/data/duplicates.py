"""Exact and near-duplicate images: the leak check of ``prepare`` and its ``--dedupe``.

Images from one cruise, camera or observation are often copies of each other: the same file twice, or a resized and
re-encoded copy. A copy in train and its twin in test makes the test figure a memory test. Each image gets, when it
is verified, a digest of its decoded pixels (exact copies, whatever the file format) and a 256-bit perceptual hash
(``imagehash.phash`` with ``hash_size=16``: the signs of the low frequencies of a 64x64 DCT, which resizing and JPEG
re-encoding barely move). Two images whose hashes differ in at most ``max_distance`` bits are near-duplicates.

Why 256 bits and 24: on 600 real plankton images (40 classes), a copy enlarged 1.6x and re-encoded at JPEG quality
70 moved the hash by at most 20 bits, while the closest two different images were 32 apart. The common 64-bit hash
could not tell them apart (copies up to 4 bits, different images from 2).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

HASH_SIZE = 16  # imagehash's hash_size: 16 x 16 = 256 bits
WORDS = HASH_SIZE * HASH_SIZE // 64  # the hash as this many uint64 words
NEAR_DISTANCE = 24  # of 256 bits (see above)
CHUNK = 128  # rows compared at once: CHUNK x N x WORDS uint64 in memory (100 MB at N = 25,000)


def fingerprint(img: Image.Image, rgb: np.ndarray) -> tuple[tuple[int, ...], str]:
    """The perceptual hash (``WORDS`` 64-bit words) and the digest of the decoded pixels of one image."""
    import imagehash

    bits = imagehash.phash(img.convert("L"), hash_size=HASH_SIZE).hash.reshape(WORDS, 64)
    words = tuple(int(np.packbits(w).view(">u8")[0]) for w in bits)
    digest = hashlib.sha1(np.ascontiguousarray(rgb).tobytes() + repr(rgb.shape).encode()).hexdigest()[:20]
    return words, digest


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits that differ between hashes ``a`` [..., WORDS] and ``b`` (broadcast), summed over the words."""
    return np.bitwise_count(a ^ b).sum(-1, dtype=np.int64)


@dataclass(frozen=True)
class Pair:
    """Records ``a`` < ``b`` (indices) that are copies of each other: ``distance`` bits apart, 0 and ``exact`` for
    the same pixels."""

    a: int
    b: int
    distance: int
    exact: bool


def duplicate_pairs(phashes: np.ndarray, digests: list[str], max_distance: int = NEAR_DISTANCE) -> Iterator[Pair]:
    """Every pair of records (``phashes`` [N, WORDS]) whose pixels are identical or whose hashes are at most
    ``max_distance`` bits apart (exhaustive: N^2/2 comparisons, in chunks)."""
    h = np.asarray(phashes, dtype=np.uint64).reshape(len(digests), WORDS)
    for start in range(0, len(h), CHUNK):
        block = h[start : start + CHUNK]
        dist = hamming(block[:, None], h[None, start:])  # this chunk against itself and every later one
        rows, cols = np.nonzero(dist <= max_distance)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            a, b = start + r, start + c
            if b > a:
                yield Pair(a, b, int(dist[r, c]), digests[a] == digests[b])
    # identical pixels with different hashes cannot happen (the hash is a function of the pixels)


class FirstOfEach:
    """Streaming ``--dedupe``: :meth:`seen` says whether an image is a copy of one already kept (and of which)."""

    def __init__(self, max_distance: int = NEAR_DISTANCE) -> None:
        self.max_distance = max_distance
        self.hashes = np.zeros((1024, WORDS), dtype=np.uint64)
        self.n = 0
        self.digests: dict[str, int] = {}

    def seen(self, phash: tuple[int, ...], digest: str) -> tuple[int, int] | None:
        """``(index of the kept copy, distance)`` when the image duplicates a kept one, else ``None`` (and the
        image is kept: the next ones are compared with it)."""
        if digest in self.digests:
            return self.digests[digest], 0
        if self.n:
            dist = hamming(self.hashes[: self.n], np.array(phash, dtype=np.uint64))
            j = int(np.argmin(dist))
            if dist[j] <= self.max_distance:
                return j, int(dist[j])
        if self.n == len(self.hashes):
            self.hashes = np.concatenate([self.hashes, np.zeros_like(self.hashes)])
        self.hashes[self.n] = phash
        self.digests[digest] = self.n
        self.n += 1
        return None
