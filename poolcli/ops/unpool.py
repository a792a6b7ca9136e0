"""Max unpooling, as ``torch.nn.functional.max_unpool2d``, plus the accumulating variant that is
the exact backward pass of max pooling.

Arrays are channels-last: ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)``. Every input value is
scattered to the cell its index names in the output plane of its own image and channel; all other
cells are zero. The scatter is a handful of whole-array numpy calls (no Python loop over cells).
"""

from __future__ import annotations

import numbers

import numpy as np

from poolcli.ops._geometry import as_batch, as_pair

__all__ = ["max_unpool2d", "unpool_output_size"]

_REDUCE = (None, "sum")


def unpool_output_size(
    in_hw, kernel_size, stride=None, padding=0, output_size=None, *, x_shape=None
):
    """Validate ``output_size`` the way PyTorch does and return the output plane ``(h, w)``.

    PyTorch's default per axis is ``(in - 1) * s - 2p + k``. A given ``output_size`` must lie
    *strictly* between ``default - s`` and ``default + s`` on each axis
    (``torch.nn.functional._unpool_output_size``; its message says "between" but both bounds
    are exclusive). ``output_size`` is ``(h, w)``, or channels-last with leading/trailing dims,
    ``(h, w, c)`` or ``(n, h, w, c)``, whose extra dims must then match ``x_shape`` (the
    ``(N, H, W, C)`` shape of the input, when given).

    >>> unpool_output_size((2, 3), 2)
    (4, 6)
    >>> unpool_output_size((2, 3), 3, 2, output_size=(6, 7))
    (6, 7)
    """
    k = as_pair(kernel_size, "kernel_size", minimum=1)
    s = k if stride is None else as_pair(stride, "stride", minimum=1)
    p = as_pair(padding, "padding", minimum=0)
    default = tuple((n - 1) * s[i] - 2 * p[i] + k[i] for i, n in enumerate(in_hw))
    if output_size is None:
        size = default
    else:
        size = _spatial_output_size(output_size, x_shape)
        for d in range(2):
            lo, hi = default[d] - s[d], default[d] + s[d]
            if not lo < size[d] < hi:
                raise ValueError(
                    f"invalid output_size {size}: dim {d} ({'hw'[d]}) must lie "
                    f"strictly between {lo} and {hi} (the default size {default[d]} +- stride "
                    f"{s[d]}, PyTorch's rule) for a {in_hw[0]}x{in_hw[1]} input with "
                    f"kernel_size={k[0]}x{k[1]}, stride={s[0]}x{s[1]}, padding={p[0]}x{p[1]}"
                )
    if size[0] < 1 or size[1] < 1:
        raise ValueError(
            f"unpooled output size must be at least 1x1, got {size[0]}x{size[1]} for a "
            f"{in_hw[0]}x{in_hw[1]} input with kernel_size={k[0]}x{k[1]}, "
            f"stride={s[0]}x{s[1]}, padding={p[0]}x{p[1]}"
        )
    return size


def _spatial_output_size(output_size, x_shape) -> tuple[int, int]:
    """The ``(h, w)`` part of an ``(h, w)``, ``(h, w, c)`` or ``(n, h, w, c)`` output_size."""
    try:
        if isinstance(output_size, (str, bytes)):
            raise TypeError
        items = tuple(output_size)
    except TypeError:
        raise TypeError(
            f"output_size must be a sequence (h, w), (h, w, c) or (n, h, w, c), got {output_size!r}"
        ) from None
    if not all(
        isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) for v in items
    ):
        raise TypeError(f"output_size must hold ints, got {output_size!r}")
    items = tuple(int(v) for v in items)
    if len(items) == 2:
        return items
    if len(items) not in (3, 4):
        raise ValueError(
            "output_size must have 2 elements (h, w), 3 (h, w, c) or 4 (n, h, w, c), "
            f"got {len(items)}: {output_size!r}"
        )
    hw = items[:2] if len(items) == 3 else items[1:3]
    if x_shape is not None:
        n, _, _, c = x_shape
        if len(items) == 3:
            extra = {"c": (items[2], c)}
        else:
            extra = {"n": (items[0], n), "c": (items[3], c)}
        for name, (given, actual) in extra.items():
            if given != actual:
                raise ValueError(
                    f"output_size {output_size!r} has {name}={given} but the input has "
                    f"{name}={actual}"
                )
    return hw


def max_unpool2d(x, indices, kernel_size, stride=None, padding=0, output_size=None, reduce=None):
    """Partial inverse of max pooling, as ``torch.nn.functional.max_unpool2d``.

    Parameters
    ----------
    x : ndarray
        Pooled values, ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)``, any real dtype.
    indices : ndarray of int
        Same shape as ``x``, any integer dtype: flat ``h * W_out + w`` positions in the output
        plane of the same image and channel (what ``max_pool2d(..., return_indices=True)``
        returns when ``W_out`` is the pooled input's width).
    kernel_size, stride, padding : int or (int, int)
        Only used for the default output size ``(in - 1) * s - 2p + k`` per axis and for
        PyTorch's check of ``output_size``; ``stride=None`` means ``kernel_size``.
    output_size : sequence of int, optional
        ``(h, w)``, or ``(h, w, c)`` / ``(n, h, w, c)`` (e.g. the original input's shape), of
        which the spatial part is used; extra dims must match ``x``. Each spatial size must lie
        strictly between ``default - s`` and ``default + s`` (PyTorch's rule). Pass the pooled
        input's size: the default is wrong whenever the pooling dropped rows or columns.
    reduce : {None, "sum"}
        What happens when several inputs name the same output cell. ``None``: overwrite, the
        *last* input in row-major order wins, as in PyTorch's (contiguous-tensor) CPU kernel;
        this cannot happen with indices from non-overlapping pooling, and with overlapping pooling
        the competing values are equal anyway. ``"sum"``: add them up, which is the gradient of
        ``max_pool2d(x).sum()`` (with ``x`` the upstream gradient): the true backward pass.

    Returns
    -------
    ndarray
        ``x``'s number of dimensions, spatial size ``output_size``, zeros where nothing lands.
        dtype: ``x.dtype``, except ``reduce="sum"`` on integers, which returns int64 (uint64
        for uint64 input) so that sums never wrap or saturate; float sums are computed in
        float64 and rounded once to ``x.dtype``.

    Raises
    ------
    ValueError
        Bad shapes, an ``output_size`` outside PyTorch's range, an index outside
        ``[0, h * w)`` (PyTorch raises too), an unknown ``reduce``.
    TypeError
        Non-integer ``indices`` or a non-numeric ``x``.

    Notes
    -----
    For indices from *dilated* pooling pass the effective kernel size ``d * (k - 1) + 1`` as
    ``kernel_size``: then the pooled input's size always satisfies PyTorch's rule (with the plain
    ``k`` it can fail, e.g. ``n=10, k=3, d=2, s=1``).

    PyTorch's CPU kernel for *channels-last* tensors scatters in parallel over pixels, so which
    of several colliding inputs survives there depends on thread timing; poolcli always follows
    the deterministic contiguous-layout rule (last wins). PyTorch has no integer unpooling; poolcli
    keeps integer dtypes. Cost: O(N*H*W*C) plus a sort of the colliding targets, if any.

    Examples
    --------
    >>> x = np.array([[1, 2, 6], [7, 3, 4], [0, 5, 8]], dtype=np.uint8)
    >>> from poolcli.ops.pool import max_pool2d
    >>> v, i = max_pool2d(x, 2, stride=1, return_indices=True)
    >>> v, i
    (array([[7, 6],
           [7, 8]], dtype=uint8), array([[3, 2],
           [3, 8]]))
    >>> max_unpool2d(v, i, 2, stride=1)
    array([[0, 0, 6],
           [7, 0, 0],
           [0, 0, 8]], dtype=uint8)
    >>> max_unpool2d(np.ones(v.shape), i, 2, stride=1, reduce="sum")  # d max_pool2d(x).sum() / dx
    array([[0., 0., 1.],
           [2., 0., 0.],
           [0., 0., 1.]])
    """
    x4, restore = as_batch(x)
    idx = np.asarray(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"indices must have an integer dtype, got {idx.dtype}")
    if idx.shape != np.shape(x):
        raise ValueError(
            f"indices must have the same shape as x: x has shape {np.shape(x)}, indices {idx.shape}"
        )
    if reduce not in _REDUCE:
        raise ValueError(f"reduce must be None or 'sum', got {reduce!r}")
    n, h, w, c = x4.shape
    oh, ow = unpool_output_size(
        (h, w), kernel_size, stride, padding, output_size, x_shape=x4.shape
    )
    plane = oh * ow
    if idx.size:
        bad = (idx < 0) | (idx >= plane)
        if bad.any():
            where = tuple(int(v) for v in np.argwhere(bad)[0])
            raise ValueError(
                f"invalid max index {int(idx[where])} at position {where} of indices: "
                f"indices must lie in [0, {plane}) for a {oh}x{ow} output plane"
            )
    # Flat target of every input element in the (N, oh, ow, C) output, in x4's C order.
    idx4 = idx.reshape(x4.shape).astype(np.int64, copy=False)
    target = (idx4 + (np.arange(n, dtype=np.int64) * plane)[:, None, None, None]) * c
    target += np.arange(c, dtype=np.int64)
    target = target.ravel()
    values = x4.ravel()
    size = n * plane * c
    if reduce is None:
        out = np.zeros(size, dtype=x4.dtype)
        if _has_duplicates(target, size):
            # Keep the last source of every target: within one (n, c) plane, x4's C order is the
            # plane's row-major order, which is the order PyTorch's kernel writes in.
            winner = np.full(size, -1, dtype=np.int64)
            np.maximum.at(winner, target, np.arange(target.size, dtype=np.int64))
            cells = np.flatnonzero(winner >= 0)
            out[cells] = values[winner[cells]]
        else:
            out[target] = values
    elif x4.dtype.kind == "f":
        sums = np.bincount(target, weights=values.astype(np.float64, copy=False), minlength=size)
        with np.errstate(over="ignore", invalid="ignore"):  # past float32's range: inf, quietly
            out = sums.astype(x4.dtype, copy=False)
    else:
        acc = np.dtype(np.uint64 if x4.dtype == np.uint64 else np.int64)
        out = np.zeros(size, dtype=acc)
        np.add.at(out, target, values.astype(acc, copy=False))
    return restore(out.reshape(n, oh, ow, c))


def _has_duplicates(target: np.ndarray, size: int) -> bool:
    if target.size < 2:
        return False
    if target.size * 8 < size:  # sparse: sorting the few targets beats counting every cell
        t = np.sort(target)
        return bool((t[1:] == t[:-1]).any())
    return bool((np.bincount(target, minlength=size) > 1).any())
