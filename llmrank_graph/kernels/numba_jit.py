"""The numba kernels: each weight read once at its stored dtype, the rule applied on the way,
float64 accumulation.

:func:`job` is the one entry point, run by :mod:`~llmrank_graph.kernels.numba_cpu` on a few
Python threads (``nogil``). Importing this module imports numba (about 0.3 s), so only
``numba_cpu`` imports it, and only when a CPU kernel is first used. The first call for each
weight dtype in a fresh process loads the compiled kernels from numba's on-disk cache
(``__pycache__`` beside this file, or ``NUMBA_CACHE_DIR``), well under a second; with no cache
they compile, about 7 s of CPU per dtype, once per machine and version of this file.
"""

from __future__ import annotations

import numpy as np
from llvmlite import binding as _llvm
from llvmlite import ir as _ir
from numba import njit as _njit
from numba import types as _types
from numba.core import cgutils as _cgutils
from numba.extending import intrinsic as _intrinsic

__all__ = ["ROWS", "job"]

# Rows of the storage are handed out in chunks to ``nt`` workers (this thread and pool
# threads, see numba_cpu.run), so the thread count is the caller's, without touching numba's
# global one. A worker processes four rows at a time, so that one load of v (forward) or of
# the partial sums (transpose) serves four rows, and prefetches the next four in software (the
# hardware prefetcher alone left much of the bandwidth unused in measurements). Two ways:
#
# * fused (one weight, any scale): the rule is applied inside the float64 accumulation loop
#   (_sdot4, _sdot4x2, _saxpy4, _ssums4 below; no scale is a scale of ones, exact in float32),
#   the weights read straight from their storage;
# * general ('sum', 'max', and a last partial block of < 4 rows): the rule is applied
#   into a float32 buffer of four rows that stays in L1 (_decode), one tight pass per step,
#   then the buffer is accumulated (_dot4, _dot4x2, _axpy4, _rowsum4/_colsum4).
#
# Edge weights are computed in functions without fastmath flags (_decode, _edge). The float64
# accumulation carries 'reassoc' (a reduction cannot be vectorised without it) and 'contract'
# (FMA): both change only the rounding of the accumulation. Numba compiles each function with
# its own flags and LLVM keeps them per instruction when it inlines; ``inline='always'``
# (numba-level inlining) would drop them, so it is not used.

ROWS = 4  # rows decoded per block

# Flags of the float64 accumulation: 'reassoc' lets a reduction vectorise, 'contract' lets
# multiply-add become one FMA (one rounding instead of two). Neither reaches an edge weight:
# those are computed in functions without flags (_decode, _edge), and LLVM keeps each
# instruction's own flags when it inlines.
_ACCUMULATE = {"reassoc", "contract"}

# The prefetch intrinsic is overloaded on the pointer type: "p0" since LLVM's opaque
# pointers (15), "p0i8" before.
_PREFETCH_NAME = "llvm.prefetch.p0" if _llvm.llvm_version_info >= (15,) else "llvm.prefetch.p0i8"


@_intrinsic
def _absf(_typingctx, x):
    """|x| as float32 from a float32, a bf16 bit pattern (uint16) or an fp16 one (int16).

    Clearing the sign bit is exactly float32 ``abs`` (NaN included); bf16 -> fp32 is a
    16-bit shift, fp16 -> fp32 an exact ``fpext`` (one vcvtph2ps with F16C).
    """
    f32 = _ir.FloatType()
    if x == _types.float32:
        def codegen(context, builder, sig, args):
            fabs = builder.module.declare_intrinsic("llvm.fabs", [f32])
            return builder.call(fabs, [args[0]])
    elif x == _types.uint16:
        def codegen(context, builder, sig, args):
            i32 = _ir.IntType(32)
            bits = builder.zext(builder.and_(args[0], _ir.Constant(args[0].type, 0x7FFF)), i32)
            return builder.bitcast(builder.shl(bits, _ir.Constant(i32, 16)), f32)
    elif x == _types.int16:
        def codegen(context, builder, sig, args):
            bits = builder.and_(args[0], _ir.Constant(args[0].type, 0x7FFF))
            return builder.fpext(builder.bitcast(bits, _ir.HalfType()), f32)
    else:
        return None
    return _types.float32(x), codegen


@_intrinsic
def _wide_vectors(_typingctx):
    """Let LLVM use 512-bit vectors in the calling function (a hint, moot without AVX-512).

    LLVM's tuning for recent Intel CPUs prefers 256-bit vectors; these loops ran about 10%
    faster with 512 (Sapphire Rapids, fp32 and bf16). llvmlite has no API for string
    function attributes, so they go into its attribute set directly; should that ever
    fail, the hint is skipped.
    """
    def codegen(context, builder, sig, args):
        try:
            attrs = builder.function.attributes
            set.add(attrs, '"prefer-vector-width"="512"')
            set.add(attrs, '"min-legal-vector-width"="512"')
        except Exception:  # noqa: BLE001, S110 - a performance hint only
            pass
        return context.get_dummy_value()
    return _types.void(), codegen


@_intrinsic
def _prefetch(_typingctx, arr, i, j):
    """Prefetch the cache line of ``arr[i, j]`` into all cache levels (a hint, never faults)."""
    sig = _types.void(arr, _types.intp, _types.intp)

    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = _cgutils.get_item_pointer(context, builder, aryty, ary, [args[1], args[2]], wraparound=False)
        i32 = _ir.IntType(32)
        ptr = builder.bitcast(ptr, _ir.IntType(8).as_pointer())  # a no-op with opaque pointers
        fn = _cgutils.get_or_insert_function(
            builder.module, _ir.FunctionType(_ir.VoidType(), [ptr.type, i32, i32, i32]), _PREFETCH_NAME)
        builder.call(fn, [ptr, _ir.Constant(i32, 0), _ir.Constant(i32, 3), _ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return sig, codegen


@_intrinsic
def _fetch_add(_typingctx, arr, _val):
    """Atomically add ``val`` to ``arr[0]`` (int64) and return the value before: a work counter."""
    sig = _types.int64(arr, _types.int64)

    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = _cgutils.get_item_pointer(context, builder, aryty, ary, [context.get_constant(_types.intp, 0)],
                                        wraparound=False)
        # Monotonic is enough: the counter only hands out disjoint rows; the results are
        # published by the futures' join.
        return builder.atomic_rmw("add", ptr, args[1], "monotonic")
    return sig, codegen


@_njit(cache=True, nogil=True, boundscheck=False)
def _decode(s0, s1, i, comb, scale, smode, b):
    """Row ``i`` of the edge matrix into ``b`` (float32): the rule, one pass per step."""
    _wide_vectors()
    r0 = s0[i]
    n = b.shape[0]
    if comb == 0:
        for j in range(n):
            b[j] = _absf(r0[j])
    elif comb == 1:
        r1 = s1[i]
        for j in range(n):
            b[j] = _absf(r0[j]) + _absf(r1[j])
    else:
        r1 = s1[i]
        for j in range(n):
            x = _absf(r0[j])
            y = _absf(r1[j])
            # torch.maximum: NaN wins.
            b[j] = x if (x >= y or x != x) else y  # noqa: PLR0124 - x != x: NaN
    if smode == 1:
        for j in range(n):
            b[j] = b[j] * scale[j]
    elif smode == 2:
        s = scale[i]
        for j in range(n):
            b[j] = b[j] * s


@_njit(cache=True, nogil=True, boundscheck=False)
def _decode_block(s0, s1, i, nrows, comb, scale, smode, buf):
    """Rows i:i+nrows into buf[:nrows], zeros below (a partial last block adds nothing)."""
    for q in range(nrows):
        _decode(s0, s1, i + q, comb, scale, smode, buf[q])
    for q in range(nrows, ROWS):
        for j in range(buf.shape[1]):
            buf[q, j] = 0.0


@_njit(cache=True, nogil=True, boundscheck=False)
def _prefetch_block(s0, s1, i, i1, comb):
    """Prefetch rows i:i+4 (those below i1) of the weights for the next block."""
    step = 64 // s0.itemsize
    n = s0.shape[1]
    for q in range(i, min(i + ROWS, i1)):
        for j in range(0, n, step):
            _prefetch(s0, q, j)
        if comb != 0:
            for j in range(0, n, step):
                _prefetch(s1, q, j)


@_njit(fastmath=_ACCUMULATE, cache=True, nogil=True, boundscheck=False)
def _dot4(buf, v, acc):
    """acc[q] = sum_j float64(buf[q, j]) * v[j] for the four rows of the block."""
    _wide_vectors()
    b0, b1, b2, b3 = buf[0], buf[1], buf[2], buf[3]
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    for j in range(v.shape[0]):
        x = v[j]
        a0 += np.float64(b0[j]) * x
        a1 += np.float64(b1[j]) * x
        a2 += np.float64(b2[j]) * x
        a3 += np.float64(b3[j]) * x
    acc[0] = a0
    acc[1] = a1
    acc[2] = a2
    acc[3] = a3


@_njit(fastmath=_ACCUMULATE, cache=True, nogil=True, boundscheck=False)
def _dot4x2(buf, v, w, acc):
    """As _dot4 for two vectors: acc[q] with v, acc[4 + q] with w, one read of the block."""
    _wide_vectors()
    b0, b1, b2, b3 = buf[0], buf[1], buf[2], buf[3]
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    c0 = 0.0
    c1 = 0.0
    c2 = 0.0
    c3 = 0.0
    for j in range(v.shape[0]):
        x = v[j]
        y = w[j]
        e0 = np.float64(b0[j])
        e1 = np.float64(b1[j])
        e2 = np.float64(b2[j])
        e3 = np.float64(b3[j])
        a0 += e0 * x
        a1 += e1 * x
        a2 += e2 * x
        a3 += e3 * x
        c0 += e0 * y
        c1 += e1 * y
        c2 += e2 * y
        c3 += e3 * y
    acc[0] = a0
    acc[1] = a1
    acc[2] = a2
    acc[3] = a3
    acc[4] = c0
    acc[5] = c1
    acc[6] = c2
    acc[7] = c3


@_njit(fastmath=_ACCUMULATE, cache=True, nogil=True, boundscheck=False)
def _axpy4(p, buf, a0, a1, a2, a3):
    """p[j] += sum_q float64(buf[q, j]) * a_q: elementwise, vectorised without fastmath."""
    _wide_vectors()
    b0, b1, b2, b3 = buf[0], buf[1], buf[2], buf[3]
    for j in range(p.shape[0]):
        p[j] += (np.float64(b0[j]) * a0 + np.float64(b1[j]) * a1) + (np.float64(b2[j]) * a2 + np.float64(b3[j]) * a3)


@_njit(fastmath=_ACCUMULATE, cache=True, nogil=True, boundscheck=False)
def _rowsum4(buf, acc):
    _wide_vectors()
    b0, b1, b2, b3 = buf[0], buf[1], buf[2], buf[3]
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    for j in range(b0.shape[0]):
        a0 += np.float64(b0[j])
        a1 += np.float64(b1[j])
        a2 += np.float64(b2[j])
        a3 += np.float64(b3[j])
    acc[0] = a0
    acc[1] = a1
    acc[2] = a2
    acc[3] = a3


@_njit(fastmath=_ACCUMULATE, cache=True, nogil=True, boundscheck=False)
def _colsum4(p, buf):
    _wide_vectors()
    b0, b1, b2, b3 = buf[0], buf[1], buf[2], buf[3]
    for j in range(p.shape[0]):
        p[j] += (np.float64(b0[j]) + np.float64(b1[j])) + (np.float64(b2[j]) + np.float64(b3[j]))


# Fused variants for single-weight blocks: the rule is applied inside the accumulation
# loop, the weights read straight from their storage, saving the store to and reload from
# the L1 buffer of the general path (which ran 1.5-2x slower). Each edge weight is
# e = (|w| * cs[j]) * c_q with a column scale cs (ones when the scale is per row, or when
# there is none) and a per-row c_q (1.0 when it is per column, or none). Multiplying by 1.0
# is exact in float32, so one set covers no scale and both kinds of scale bit for bit; the
# product of the sweep's plain graph (no scale, one vector) has a set of its own, _pdot4,
# whose two multiplications fewer per edge made it ~8% faster (the same numbers).
#
# Each loop runs over CHUNK columns at a time and, per chunk, prefetches the same columns of
# the next four rows (``nxt``; -1: none): the prefetches are spread through the arithmetic,
# which then overlaps the memory traffic. Prefetching a whole group of rows at once (a burst
# of 144-384 cache lines, more than the core's fill buffers take) gained nothing; spread, a
# single thread ran at 1.1x a plain read of the weights instead of 1.5x
# (benchmarks/bench_pagerank.py). The chunk's reduction is vectorised whole (64 columns:
# four or eight vectors per row), so its horizontal sum costs little.
CHUNK = 64


@_njit(cache=True, nogil=True, boundscheck=False)
def _prefetch4(s0, nxt, j):
    """Prefetch the cache line of column j in rows nxt:nxt+4 (small enough for LLVM to inline)."""
    _prefetch(s0, nxt, j)
    _prefetch(s0, nxt + 1, j)
    _prefetch(s0, nxt + 2, j)
    _prefetch(s0, nxt + 3, j)


@_njit(cache=True, nogil=True, boundscheck=False)
def _edge(x, s, c):
    """One scaled edge weight in float32, then widened: no fastmath flags here."""
    return np.float64((_absf(x) * s) * c)


@_njit(cache=True, nogil=True, boundscheck=False)
def _edge0(x):
    """One unscaled edge weight, widened (``_edge`` with s = c = 1, the same number)."""
    return np.float64(_absf(x))


@_njit(fastmath=_ACCUMULATE, cache=True, nogil=True, boundscheck=False)
def _pdot4(s0, i, nxt, v, acc):
    """acc[q] = sum_j |s0[i + q, j]| * v[j], q < 4: the unscaled forward product."""
    _wide_vectors()
    w0, w1, w2, w3 = s0[i], s0[i + 1], s0[i + 2], s0[i + 3]
    n = v.shape[0]
    line = 64 // s0.itemsize  # elements per cache line
    a0 = a1 = a2 = a3 = 0.0
    jb = 0
    while jb + CHUNK <= n:
        if nxt >= 0:
            for jj in range(jb, jb + CHUNK, line):
                _prefetch4(s0, nxt, jj)
        for j in range(jb, jb + CHUNK):
            x = v[j]
            a0 += _edge0(w0[j]) * x
            a1 += _edge0(w1[j]) * x
            a2 += _edge0(w2[j]) * x
            a3 += _edge0(w3[j]) * x
        jb += CHUNK
    if nxt >= 0:
        for jj in range(jb, n, line):
            _prefetch4(s0, nxt, jj)
    for j in range(jb, n):
        x = v[j]
        a0 += _edge0(w0[j]) * x
        a1 += _edge0(w1[j]) * x
        a2 += _edge0(w2[j]) * x
        a3 += _edge0(w3[j]) * x
    acc[0] = a0
    acc[1] = a1
    acc[2] = a2
    acc[3] = a3


@_njit(fastmath=_ACCUMULATE, cache=True, nogil=True, boundscheck=False)
def _sdot4(s0, i, nxt, cs, c0, c1, c2, c3, v, acc):
    """As _pdot4 with the scales."""
    _wide_vectors()
    w0, w1, w2, w3 = s0[i], s0[i + 1], s0[i + 2], s0[i + 3]
    n = v.shape[0]
    line = 64 // s0.itemsize
    a0 = a1 = a2 = a3 = 0.0
    jb = 0
    while jb < n:
        if nxt >= 0:
            for jj in range(jb, min(n, jb + CHUNK), line):
                _prefetch4(s0, nxt, jj)
        if jb + CHUNK <= n:  # a whole chunk: a loop of constant length, vectorised whole
            for j in range(jb, jb + CHUNK):
                x = v[j]
                s = cs[j]
                a0 += _edge(w0[j], s, c0) * x
                a1 += _edge(w1[j], s, c1) * x
                a2 += _edge(w2[j], s, c2) * x
                a3 += _edge(w3[j], s, c3) * x
        else:
            for j in range(jb, n):
                x = v[j]
                s = cs[j]
                a0 += _edge(w0[j], s, c0) * x
                a1 += _edge(w1[j], s, c1) * x
                a2 += _edge(w2[j], s, c2) * x
                a3 += _edge(w3[j], s, c3) * x
        jb += CHUNK
    acc[0] = a0
    acc[1] = a1
    acc[2] = a2
    acc[3] = a3


@_njit(fastmath=_ACCUMULATE, cache=True, nogil=True, boundscheck=False)
def _sdot4x2(w0, w1, w2, w3, cs, c0, c1, c2, c3, v, w, acc):
    _wide_vectors()
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    b0 = 0.0
    b1 = 0.0
    b2 = 0.0
    b3 = 0.0
    for j in range(v.shape[0]):
        x = v[j]
        y = w[j]
        s = cs[j]
        e0 = _edge(w0[j], s, c0)
        e1 = _edge(w1[j], s, c1)
        e2 = _edge(w2[j], s, c2)
        e3 = _edge(w3[j], s, c3)
        a0 += e0 * x
        a1 += e1 * x
        a2 += e2 * x
        a3 += e3 * x
        b0 += e0 * y
        b1 += e1 * y
        b2 += e2 * y
        b3 += e3 * y
    acc[0] = a0
    acc[1] = a1
    acc[2] = a2
    acc[3] = a3
    acc[4] = b0
    acc[5] = b1
    acc[6] = b2
    acc[7] = b3


@_njit(fastmath=_ACCUMULATE, cache=True, nogil=True, boundscheck=False)
def _saxpy4(p, w0, w1, w2, w3, cs, c0, c1, c2, c3, a0, a1, a2, a3):
    _wide_vectors()
    for j in range(p.shape[0]):
        s = cs[j]
        p[j] += ((_edge(w0[j], s, c0) * a0 + _edge(w1[j], s, c1) * a1)
                 + (_edge(w2[j], s, c2) * a2 + _edge(w3[j], s, c3) * a3))


@_njit(fastmath=_ACCUMULATE, cache=True, nogil=True, boundscheck=False)
def _ssums4(p, w0, w1, w2, w3, cs, c0, c1, c2, c3, acc):
    """Row sums into acc[:4], column sums added to p; the plain case passes ones (sums are
    a once-per-graph cost, not worth a set of their own)."""
    _wide_vectors()
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    for j in range(p.shape[0]):
        s = cs[j]
        e0 = _edge(w0[j], s, c0)
        e1 = _edge(w1[j], s, c1)
        e2 = _edge(w2[j], s, c2)
        e3 = _edge(w3[j], s, c3)
        a0 += e0
        a1 += e1
        a2 += e2
        a3 += e3
        p[j] += (e0 + e1) + (e2 + e3)
    acc[0] = a0
    acc[1] = a1
    acc[2] = a2
    acc[3] = a3


# long: numba links and optimises every jitted function with all it calls, so the three jobs
# and both row loops in one function keep the first compile short (see the docstring).
@_njit(cache=True, nogil=True, boundscheck=False)
def job(mode, t, counter, chunk, s0, s1, comb, scale, smode, vt, alpha, out, part):
    """Worker ``t``: takes chunks of ``chunk`` storage rows off ``counter`` until none is left.

    mode 0, forward: out[:, i] += alpha * (E[i] @ v) (vt: (k, cols), out: (k, rows)), rounded
    as ``out + (alpha * dot)``: the sweep's addition, done here rather than on a temporary.
    mode 1, transpose: part[t] = sum over the rows i this worker took of v[i] * E[i]
    (vt: (k, rows), part: (nt, k, cols); the caller sums over t).
    mode 2, sums: out[0, i] = sum_j E[i, j]; part[t, 0] = column sums of the rows taken.
    Chunks are handed out at run time, so a worker that starts late (a pool thread takes
    tens of microseconds to wake) or runs slow simply takes fewer: no thread waits on a
    straggler. ``chunk`` is a multiple of four. One function for the three jobs: numba
    links and optimises each jitted caller once, so one caller keeps the first compile short.
    """
    _wide_vectors()
    rows, cols = s0.shape
    k = vt.shape[0]
    acc = np.empty(2 * ROWS, np.float64)
    buf = np.empty((ROWS, cols), np.float32)
    p = part[min(t, part.shape[0] - 1)]  # the forward job gets a 1-row placeholder
    if mode != 0:
        for kk in range(p.shape[0]):
            for j in range(cols):
                p[kk, j] = 0.0
    fused = comb == 0
    one = np.float32(1.0)
    # The scaled set's column scale: the scale itself, or ones when it is per row (or none).
    cs = scale if smode == 1 else np.ones(cols, np.float32)
    i = _fetch_add(counter, chunk)
    while i < rows:
        i1 = min(rows, i + chunk)
        nexti = -1
        if fused:
            # The fused loops over whole blocks of four rows; a last partial block goes below.
            c0 = c1 = c2 = c3 = one
            while i + ROWS <= i1:
                if i + 2 * ROWS <= i1:
                    nxt = i + ROWS  # the next four rows, prefetched during these
                else:  # the last four of the chunk: take the next chunk now, to prefetch its first rows
                    nexti = _fetch_add(counter, chunk)
                    nxt = nexti if nexti + ROWS <= rows else -1
                if smode == 2:
                    c0, c1, c2, c3 = scale[i], scale[i + 1], scale[i + 2], scale[i + 3]
                w0, w1, w2, w3 = s0[i], s0[i + 1], s0[i + 2], s0[i + 3]
                if mode != 0 or k != 1:
                    # The other loops run over whole rows: in chunks, their stores (transpose)
                    # or eight sums (k = 2) ran 1.5x slower; they prefetch the next rows at once.
                    _prefetch_block(s0, s1, i + ROWS, i1, comb)
                if mode == 0:
                    if k == 1 and smode == 0:
                        _pdot4(s0, i, nxt, vt[0], acc)
                    elif k == 1:
                        _sdot4(s0, i, nxt, cs, c0, c1, c2, c3, vt[0], acc)
                    else:
                        _sdot4x2(w0, w1, w2, w3, cs, c0, c1, c2, c3, vt[0], vt[1], acc)
                    for kk in range(k):
                        for q in range(ROWS):
                            out[kk, i + q] += alpha * acc[kk * ROWS + q]
                elif mode == 1:
                    for kk in range(k):
                        vk = vt[kk]
                        _saxpy4(p[kk], w0, w1, w2, w3, cs, c0, c1, c2, c3, vk[i], vk[i + 1], vk[i + 2], vk[i + 3])
                else:
                    _ssums4(p[0], w0, w1, w2, w3, cs, c0, c1, c2, c3, acc)
                    for q in range(ROWS):
                        out[0, i + q] = acc[q]
                i += ROWS
        # The general path: the rule into an L1 buffer of four rows, then float64 from there.
        while i < i1:
            n = min(ROWS, i1 - i)
            _decode_block(s0, s1, i, n, comb, scale, smode, buf)
            _prefetch_block(s0, s1, i + ROWS, i1, comb)
            if mode == 0:
                if k == 1:
                    _dot4(buf, vt[0], acc)
                else:
                    _dot4x2(buf, vt[0], vt[1], acc)
                for kk in range(k):
                    for q in range(n):
                        out[kk, i + q] += alpha * acc[kk * ROWS + q]
            elif mode == 1:
                for kk in range(k):
                    vk = vt[kk]
                    # Rows past the end are zeros in buf; their coefficient is 0 too.
                    for q in range(ROWS):
                        acc[q] = vk[i + q] if q < n else 0.0
                    _axpy4(p[kk], buf, acc[0], acc[1], acc[2], acc[3])
            else:
                _rowsum4(buf, acc)
                for q in range(n):
                    out[0, i + q] = acc[q]
                _colsum4(p[0], buf)
            i += ROWS
        i = nexti if nexti >= 0 else _fetch_add(counter, chunk)
