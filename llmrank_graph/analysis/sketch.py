"""Quantiles of many float32 values in one pass, within a stated relative error: a log-bucket sketch.

:class:`QuantileSketch` is a DDSketch-style histogram (Masson, Rim and Lee, VLDB 2019) whose
bucket of a float32 ``x`` is the top 16 bits of its bit pattern: the sign, the 8 exponent bits
and the 7 leading mantissa bits, which is ``x`` truncated to bfloat16. In each octave
``[2^e, 2^(e+1))`` the buckets are 128 intervals ``[2^e (1 + j/128), 2^e (1 + (j+1)/128))``,
so the largest value of a bucket is less than ``gamma = 1 + 2^-7`` times its smallest, and the
value that represents the bucket, ``2 a b / (a + b)`` for a bucket ``[a, b]``, is within
``(gamma - 1) / (gamma + 1) = 1/257`` (0.39%) of every value in it: DDSketch's relative
accuracy ``alpha`` for ``gamma``. This is DDSketch's bit-pattern index mapping rather than
``ceil(log_gamma(x))``: the bucket comes from an integer shift, with no logarithm, and 65,536
counters cover every float32.

What is exact, whatever the bucket: the count, the number of zeros (kept apart from the
buckets), the minimum, the maximum and the float64 sum. Quantile ``q`` of ``n`` values follows
numpy's default (``np.quantile``, method ``'linear'``): the order statistics at ``floor`` and
``ceil`` of ``q (n - 1)``, interpolated. Each order statistic is taken from its bucket (0 in
the zeros, the minimum and the maximum exactly at the ends, and a bucket's interval clipped to
``[min, max]``), so that for values of one sign (edge weights are non-negative) every
quantile is within :data:`RELATIVE_ERROR` of numpy's, relatively. The exceptions are
subnormal floats (below 1.2e-38), whose buckets are linear: there the error is at most
2^-134 in absolute value. NaN values make every quantile NaN, as in numpy.

The sketch is mergeable: :meth:`QuantileSketch.merge` of the sketches of two parts is the
sketch of the whole, exactly (sums of counters), so sketches of separate pieces (shards, blocks
read by separate workers) combine without a second read.
:meth:`QuantileSketch.exact_quantiles` uses the histogram to select exact order statistics
from the values themselves, when they are in memory (numpy's quantiles, bit for bit).

The counters are filled by a numba kernel that reads each chunk once and also returns its
float64 row and column sums (a block's in- and out-strengths). The ``ddsketch`` package adds
values one by one in Python, far too slow for the 10^8 to 10^9 edges of a block of a large
model, hence this vectorised kernel. numba is imported on first use.

>>> import numpy as np
>>> x = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 100.0], dtype=np.float32)
>>> sk = QuantileSketch.of(x)
>>> sk.count, sk.zeros, sk.minimum, sk.maximum, sk.total
(6, 1, 0.0, 100.0, 110.0)
>>> got, want = sk.quantiles([0.0, 0.5, 0.9, 1.0]), np.quantile(x.astype(np.float64), [0.0, 0.5, 0.9, 1.0])
>>> bool(np.all(np.abs(got - want) <= RELATIVE_ERROR * np.abs(want)))
True
>>> sk.exact_quantiles(x, [0.0, 0.5, 0.9, 1.0]).tolist() == want.tolist()
True
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

__all__ = ["QuantileSketch", "RELATIVE_ERROR", "N_BUCKETS", "describe_error"]

#: Mantissa bits a bucket keeps (bucket = the top ``9 + MANTISSA_BITS`` bits of the float32).
MANTISSA_BITS = 7
_SHIFT = 23 - MANTISSA_BITS
#: Counters of one sketch: every 16-bit (sign, exponent, 7 mantissa bits) prefix.
N_BUCKETS = 1 << (32 - _SHIFT)
#: Relative error bound of a sketch quantile of values of one sign: ``(gamma - 1) / (gamma + 1)``
#: with ``gamma = 1 + 2^-7``, i.e. 1/257.
RELATIVE_ERROR = 2.0 ** -MANTISSA_BITS / (2.0 + 2.0 ** -MANTISSA_BITS)

_SIGN = N_BUCKETS >> 1  # buckets at or above hold negative values
_TOP = 0xFF << (MANTISSA_BITS)  # magnitude bucket of the exponent 255: inf (NaNs are counted apart)
_SUBNORMAL = 1 << MANTISSA_BITS  # magnitude buckets below: exponent 0, linear buckets


def describe_error(how_exact: str = "exact=True") -> str:
    """The bound in words, as ``inspect`` prints it; ``how_exact`` says how to ask for exact quantiles.

    >>> describe_error()
    'quantiles within 0.39% relative error (a log-bucket sketch; exact=True for exact ones)'
    """
    return f"quantiles within {100 * RELATIVE_ERROR:.2f}% relative error (a log-bucket sketch; {how_exact} for " \
           "exact ones)"


@functools.cache
def _kernel():
    """The jitted one-pass scan (compiled, or loaded from numba's cache, on first use)."""
    from numba import njit

    @njit(nogil=True, cache=True, fastmath={"reassoc"})
    def scan(c, bits, counts, colsum, rowsum, shift):  # pragma: no cover - runs compiled
        """Counts of ``bits >> shift`` into ``counts``, row sums into ``rowsum``, column sums added to
        ``colsum`` (when it has any), float64; returns (+0 count, -0 count)."""
        rows, cols = c.shape
        pz = 0
        nz = 0
        with_cols = colsum.shape[0] > 0
        for i in range(rows):
            s = 0.0
            if with_cols:
                for j in range(cols):
                    x = np.float64(c[i, j])
                    s += x
                    colsum[j] += x
            else:
                for j in range(cols):
                    s += np.float64(c[i, j])
            rowsum[i] = s
            for j in range(cols):
                b = bits[i, j]
                counts[b >> shift] += 1
                pz += b == 0
                nz += b == 0x80000000
        return pz, nz

    return scan


def _bucket_bounds(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The smallest and largest float32 (as float64) of each bucket; negative buckets give ``lo <= hi <= 0``."""
    mag = ids.astype(np.uint32) & (_SIGN - 1)
    a = (mag << _SHIFT).view(np.float32).astype(np.float64)
    b = (((mag + 1) << _SHIFT) - 1).view(np.float32).astype(np.float64)
    b[mag >= _TOP] = np.inf
    neg = ids >= _SIGN
    return np.where(neg, -b, a), np.where(neg, -a, b)


class QuantileSketch:
    """A relative-error quantile sketch of float32 values, filled chunk by chunk (see the module docstring).

    Attributes
    ----------
    counts : numpy.ndarray
        (:data:`N_BUCKETS`,) int64 counters of the non-zero, non-NaN values.
    count, zeros, nans : int
        Values seen, zeros (+0 and -0) and NaNs among them.
    total : float
        Their float64 sum.
    minimum, maximum : float
        The smallest and largest (NaN when empty; NaNs ignored).
    """

    def __init__(self):
        self.counts = np.zeros(N_BUCKETS, dtype=np.int64)
        self.count = self.zeros = self.nans = 0
        self.total = 0.0
        self.minimum = self.maximum = np.nan

    @classmethod
    def of(cls, values: np.ndarray) -> QuantileSketch:
        """The sketch of an array of float32 values, any shape."""
        sk = cls()
        sk.add(np.asarray(values, dtype=np.float32).reshape(1, -1))
        return sk

    def add(self, chunk: np.ndarray, colsum: np.ndarray | None = None) -> np.ndarray:
        """Add a 2-D float32 chunk; return its float64 row sums and add its column sums to ``colsum``.

        One read of ``chunk``. ``colsum`` is a float64 array of ``chunk.shape[1]`` (None: no
        column sums).
        """
        c = np.ascontiguousarray(chunk, dtype=np.float32)
        if c.ndim != 2:
            raise ValueError(f"a chunk must be 2-D; got shape {c.shape}")
        rowsum = np.empty(c.shape[0], dtype=np.float64)
        if c.size == 0:
            return rowsum * 0
        bits = c.view(np.uint32)
        cols = np.zeros(0) if colsum is None else colsum
        pz, nz = _kernel()(c, bits, self.counts, cols, rowsum, _SHIFT)
        self.counts[0] -= pz  # zeros are kept apart from the buckets
        self.counts[_SIGN] -= nz
        self.zeros += int(pz + nz)
        self.count += c.size
        lo, hi = c.min(), c.max()
        if np.isnan(hi):  # rare: NaNs out of the buckets
            lo, hi = self._drop_nans(c, bits)
        self.total += float(rowsum.sum())
        self.minimum = float(np.fmin(self.minimum, lo))
        self.maximum = float(np.fmax(self.maximum, hi))
        return rowsum

    def _drop_nans(self, c: np.ndarray, bits: np.ndarray) -> tuple[float, float]:
        """Move this chunk's NaNs from the buckets to ``nans``; the chunk's min and max without them."""
        nan = np.isnan(c)
        self.counts -= np.bincount((bits[nan] >> _SHIFT).astype(np.intp), minlength=N_BUCKETS)
        self.nans += int(nan.sum())
        rest = c[~nan]
        return (rest.min(), rest.max()) if rest.size else (np.nan, np.nan)

    def merge(self, other: QuantileSketch) -> QuantileSketch:
        """Add ``other`` into this sketch (the sketch of both sets of values); returns self."""
        self.counts += other.counts
        self.count += other.count
        self.zeros += other.zeros
        self.nans += other.nans
        self.total += other.total
        self.minimum = float(np.fmin(self.minimum, other.minimum))
        self.maximum = float(np.fmax(self.maximum, other.maximum))
        return self

    # ------------------------------------------------------------------------ quantiles
    def _ranks(self, qs: Sequence[float]):
        """numpy's linear method: for each q the ranks below and above ``q (n - 1)`` and the weight of the upper."""
        n = self.count - self.nans
        virtual = (n - 1) * np.asarray(qs, dtype=np.float64)
        lo = np.floor(virtual)
        hi = lo + 1
        top = virtual >= n - 1
        lo[top] = hi[top] = n - 1
        return lo.astype(np.int64), hi.astype(np.int64), virtual - lo

    def _locate(self, ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each rank, its slot (a bucket id, or -1 for the zeros) and its rank inside the slot."""
        order = np.r_[np.arange(N_BUCKETS - 1, _SIGN - 1, -1), -1, np.arange(0, _SIGN)]  # ascending values
        seq = np.r_[self.counts[_SIGN:][::-1], self.zeros, self.counts[:_SIGN]]
        cum = np.cumsum(seq)
        pos = np.searchsorted(cum, ranks, side="right")
        return order[pos], ranks - (cum[pos] - seq[pos])

    def _order_stats(self, ranks: np.ndarray) -> np.ndarray:
        """Estimates of the order statistics at ``ranks``, each within RELATIVE_ERROR (module docstring)."""
        slots, _ = self._locate(ranks)
        a, b = _bucket_bounds(np.maximum(slots, 0))
        a, b = np.maximum(a, self.minimum), np.minimum(b, self.maximum)
        with np.errstate(invalid="ignore", divide="ignore"):
            pos = np.where(a + b != 0, 2 * a * b / (a + b), 0.0)  # harmonic mean: least worst relative error
        lin = (np.maximum(slots, 0) & (_SIGN - 1)) < _SUBNORMAL
        out = np.where(np.isinf(a) | np.isinf(b), np.where(np.isinf(a), a, b), np.where(lin, (a + b) / 2, pos))
        out[slots < 0] = 0.0
        n = self.count - self.nans
        out[ranks == 0] = self.minimum
        out[ranks == n - 1] = self.maximum
        return out

    def _interpolated(self, stats, qs: Sequence[float]) -> np.ndarray:
        if self.count == 0 or self.nans:
            return np.full(len(qs), np.nan)
        lo, hi, t = self._ranks(qs)
        va, vb = stats(np.r_[lo, hi]).reshape(2, -1)
        diff = vb - va  # numpy's _lerp, to the bit
        return np.where(t >= 0.5, vb - diff * (1 - t), va + diff * t)

    def quantiles(self, qs: Sequence[float]) -> np.ndarray:
        """Quantiles ``qs`` of the values, each within :data:`RELATIVE_ERROR` of numpy's (float64)."""
        return self._interpolated(self._order_stats, qs)

    def exact_quantiles(self, values: np.ndarray, qs: Sequence[float]) -> np.ndarray:
        """numpy's quantiles of ``values`` (the values this sketch holds, float32) as float64, exactly.

        The histogram says which buckets hold the order statistics needed; only the values of
        those buckets are gathered and selected (``np.partition``), not the whole array.
        """
        v = np.asarray(values, dtype=np.float32).reshape(-1)

        def stats(ranks: np.ndarray) -> np.ndarray:
            slots, inner = self._locate(ranks)
            out = np.zeros(len(ranks))
            wanted = np.unique(slots[slots >= 0])
            if not len(wanted):
                return out
            flag = np.zeros(N_BUCKETS, dtype=bool)
            flag[wanted] = True
            ids = v.view(np.uint32) >> _SHIFT
            keep = flag[ids]  # no NaN here (they make every quantile NaN before this)
            cand, cid = v[keep], ids[keep]
            if flag[0] or flag[_SIGN]:  # the buckets of +0 and -0: the zeros are counted apart
                cid = cid[cand != 0]
                cand = cand[cand != 0]
            for s in wanted:
                sel = slots == s
                mine = cand[cid == s]
                mine.partition(np.unique(inner[sel]))
                out[sel] = mine[inner[sel]]
            return out

        return self._interpolated(stats, qs)
