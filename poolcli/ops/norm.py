"""Normalization operators: instance, batch, layer and group norm, channels last.

Arrays are ``(H, W, C)`` (one image), ``(N, H, W, C)`` (a batch) or ``(H, W)`` (grey, treated as
``(H, W, 1)``; the result has the input's ndim). Every function returns a new array and never
modifies ``x``.

Numerics (shared by every function here):

- Statistics and the affine transform are computed in float64, always; the mean is subtracted in
  float64 and the variance is the two-pass ``mean((x - mean)**2)`` (never ``E[x^2] - E[x]^2``).
- The result is float64 for float64 input and float32 for everything else (integers, float16,
  float32). Because float32 and 16-bit integer sums are exact in float64, a constant float32 or
  integer plane normalizes to exactly ``0`` (``bias`` with an affine transform); PyTorch's float32
  kernels can leave a rounding residue there (5e-5 in one fixture case). A constant float64 plane
  gives ``0`` only up to the rounding of its float64 mean (``|y| <~ 1e-16 * |x| / sqrt(eps)``),
  as in PyTorch.
- NaN and inf propagate as in PyTorch: a NaN or inf anywhere in a normalization group makes the
  whole group NaN. Nothing is clipped or replaced, and no floating-point warnings are emitted.
- Zero variance is fine: ``var + eps > 0``, so the output is ``0`` (``bias``).

The PyTorch equivalents (``torch.nn.functional.instance_norm``, ``batch_norm``, ``layer_norm``,
``group_norm`` on NCHW tensors) are the reference; ``tests/fixtures/norm_torch.npz`` pins them.

:class:`RunningStats` accumulates per-channel statistics over a stream of batches for the CLI's
"fit running statistics" feature (exact totals, plus PyTorch's momentum average).
"""

from __future__ import annotations

import numbers

import numpy as np

from poolcli.ops._bands import RowBlocks

__all__ = ["instance_norm", "batch_norm", "layer_norm", "group_norm", "RunningStats",
           "NormBands"]


# --------------------------------------------------------------------------- validation helpers


def _check_numeric_dtype(dtype: np.dtype, name: str) -> None:
    """Raise TypeError unless ``dtype`` is a real integer or floating type (bool excluded)."""
    if dtype.kind not in "uif":
        raise TypeError(
            f"{name} must have a real integer or floating dtype, got {dtype} "
            "(bool, complex, object and string arrays are not supported)"
        )


def _as_batch(x, *, func: str, allow_batch: bool = True) -> tuple[np.ndarray, int]:
    """Validate ``x`` and return it as an ``(N, H, W, C)`` view plus the original ndim."""
    x = np.asarray(x)
    _check_numeric_dtype(x.dtype, "x")
    ndims = (2, 3, 4) if allow_batch else (2, 3)
    if x.ndim not in ndims:
        layouts = "(H, W), (H, W, C) or (N, H, W, C)" if allow_batch else "(H, W) or (H, W, C)"
        raise ValueError(f"{func}: x must be {layouts}, got an array of shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{func}: x is empty (shape {x.shape}); nothing to normalize")
    ndim = x.ndim
    if ndim == 2:
        x = x[np.newaxis, :, :, np.newaxis]
    elif ndim == 3:
        x = x[np.newaxis]
    return x, ndim


def _restore_ndim(y: np.ndarray, ndim: int) -> np.ndarray:
    """Undo :func:`_as_batch`'s reshaping."""
    if ndim == 2:
        return y[0, :, :, 0]
    if ndim == 3:
        return y[0]
    return y


def _out_dtype(dtype: np.dtype) -> np.dtype:
    """float64 for float64 (or wider) input, float32 for everything else."""
    if dtype.kind == "f" and dtype.itemsize >= 8:
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def _check_eps(eps) -> float:
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a real number, got {eps!r}")
    eps = float(eps)
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    return eps


def _check_momentum(momentum) -> float:
    if momentum is None:
        raise ValueError(
            "momentum must be a float in [0, 1], got None (F.batch_norm needs a float; for "
            "PyTorch's cumulative moving average use RunningStats.update(batch, momentum=None))"
        )
    if isinstance(momentum, (bool, np.bool_)) or not isinstance(momentum, numbers.Real):
        raise TypeError(f"momentum must be a float in [0, 1], got {momentum!r}")
    momentum = float(momentum)
    if not 0.0 <= momentum <= 1.0:  # also rejects NaN
        raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
    return momentum


def _affine_param(value, name: str, num_channels: int, full_shape=None) -> np.ndarray | None:
    """Return ``weight``/``bias`` as float64, shaped to broadcast against ``(N, H, W, C)``.

    Accepted: ``None``, a scalar, a length-C vector, and (layer norm only) an array of
    ``full_shape`` (the image shape without the batch axis, e.g. ``(H, W, C)`` or ``(H, W)``).
    """
    if value is None:
        return None
    arr = np.asarray(value)
    _check_numeric_dtype(arr.dtype, name)
    arr = arr.astype(np.float64)
    if arr.ndim == 0:
        return arr
    if arr.ndim == 1 and arr.shape[0] == num_channels:
        return arr  # broadcasts over the last (channel) axis
    if full_shape is not None and arr.shape == tuple(full_shape):
        return arr.reshape(full_shape[:2] + (num_channels,))  # (H, W) grey -> (H, W, 1)
    if arr.ndim == 1:
        what = f"has length {arr.shape[0]}"
    else:
        what = f"has shape {arr.shape}"
    expected = f"a scalar or one value per channel (length C={num_channels})"
    if full_shape is not None:
        expected += f" or the image shape {tuple(full_shape)}"
    raise ValueError(f"{name} {what}, expected {expected}")


def _group_sum(s: np.ndarray, num_groups: int) -> np.ndarray:
    """Sum ``(A, C)`` per-channel values within channel groups, repeated back to ``(A, C)``."""
    a, c = s.shape
    if num_groups == c:
        return s
    return np.repeat(s.reshape(a, num_groups, c // num_groups).sum(axis=2), c // num_groups, axis=1)


# Values per block in the streaming passes below: float64 temporaries of ~2 MiB, so memory is
# the input plus the result whatever the image size (whole-array float64 copies made an
# 8192 x 8192 RGB uint8 image cost 3.3 GB; now 1 GB, of which 768 MiB is the float32 result).
_BLOCK_VALUES = 1 << 18


def _block_rows(width: int, channels: int) -> int:
    """Rows per block of :func:`_blocks` (also :class:`NormBands`'s, for the same sums)."""
    return max(1, _BLOCK_VALUES // max(1, width * channels))


def _blocks(x4: np.ndarray):
    """Yield ``(n, r0, r1, block)``: rows ``[r0, r1)`` of image ``n`` of ``x4`` (N, H, W, C) as a
    new contiguous float64 ``(rows * W, C)`` array (the caller may modify it)."""
    n_img, h, w, c = x4.shape
    rows = _block_rows(w, c)
    for n in range(n_img):
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            yield n, r0, r1, x4[n, r0:r1].astype(np.float64).reshape(-1, c)


def _moments(x4: np.ndarray, *, per_image: bool, num_groups: int):
    """Two-pass float64 statistics of ``x4`` (N, H, W, C) per channel group.

    Statistics are per image (``per_image``, A = N) or over the whole batch (A = 1). Returns
    ``(mean, var)`` as ``(A, C)`` arrays (one value per channel, repeated within a group), the
    variance biased: ``mean((x - mean)**2)``, never ``E[x^2] - E[x]^2``. Streams over blocks of
    rows (einsum reduces a channels-last block several times faster than ``sum(axis=0)``,
    without a temporary for the squares).
    """
    n_img, h, w, c = x4.shape
    sums = np.zeros((n_img if per_image else 1, c))
    for n, _, _, block in _blocks(x4):
        sums[n if per_image else 0] += np.einsum("kc->c", block)
    count = (h * w if per_image else n_img * h * w) * (c // num_groups)
    mean = _group_sum(sums, num_groups) / count
    squares = np.zeros_like(sums)
    for n, _, _, block in _blocks(x4):
        a = n if per_image else 0
        block -= mean[a]
        squares[a] += np.einsum("kc,kc->c", block, block)
    var = _group_sum(squares, num_groups) / count
    return mean, var


def _apply(x4: np.ndarray, mean: np.ndarray, scale: np.ndarray, *, per_image: bool, weight, bias,
           out_dtype) -> np.ndarray:
    """``(x - mean) / scale * weight + bias`` in float64, block by block, into a new
    ``out_dtype`` array. ``mean``/``scale`` are ``(A, C)``; ``weight``/``bias`` scalars, ``(C,)``
    or ``(H, W, C)``."""
    n_img, h, w, c = x4.shape
    out = np.empty(x4.shape, dtype=out_dtype)
    for n, r0, r1, block in _blocks(x4):
        a = n if per_image else 0
        out[n, r0:r1] = _apply_block(block, mean[a], scale[a], weight, bias, r0, w)
    return out


def _apply_block(block: np.ndarray, mean, scale, weight, bias, r0: int, w: int) -> np.ndarray:
    """``(block - mean) / scale * weight + bias`` in place on a float64 ``(rows * W, C)`` block
    of image rows from ``r0``; returns it as ``(rows, W, C)`` (elementwise: any rows will do)."""
    block -= mean
    block /= scale
    y = block.reshape(-1, w, block.shape[1])
    r1 = r0 + y.shape[0]
    if weight is not None:
        y *= weight[r0:r1] if weight.ndim == 3 else weight
    if bias is not None:
        y += bias[r0:r1] if bias.ndim == 3 else bias
    return y


def _normalize(x4: np.ndarray, *, per_image: bool, num_groups: int | None, eps: float, weight,
               bias, out_dtype):
    """Core: ``(x - mean) / sqrt(var + eps) * weight + bias`` in float64, cast to ``out_dtype``.

    Statistics are per image (``per_image``) or over the whole batch, per channel
    (``num_groups=None``) or per group of channels. Returns ``(y, mean, var)``, ``mean``/``var``
    being ``(A, C)`` with A = N per image, 1 for the batch.
    """
    c = x4.shape[3]
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        mean, var = _moments(x4, per_image=per_image,
                             num_groups=c if num_groups is None else num_groups)
        y = _apply(x4, mean, np.sqrt(var + eps), per_image=per_image, weight=weight, bias=bias,
                   out_dtype=out_dtype)
        return y, mean, var


def _ema_update(running_mean: np.ndarray, running_var: np.ndarray, mean: np.ndarray,
                var_biased: np.ndarray, n: int, momentum: float) -> None:
    """PyTorch's running-statistics update, in place, computed in float64.

    ``run_mean = (1 - m) * run_mean + m * mean``; ``run_var = (1 - m) * run_var + m * var * n/(n-1)``.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        var_unbiased = var_biased * (n / (n - 1))
        new_mean = (1.0 - momentum) * running_mean.astype(np.float64) + momentum * mean
        new_var = (1.0 - momentum) * running_var.astype(np.float64) + momentum * var_unbiased
        running_mean[...] = new_mean
        running_var[...] = new_var


# --------------------------------------------------------------------------- operators


def instance_norm(x, *, eps=1e-5, weight=None, bias=None):
    """Normalize each image's channels to zero mean and unit variance (instance norm).

    Parameters
    ----------
    x : (H, W), (H, W, C) or (N, H, W, C) array_like
        Image(s), channels last, any real integer or floating dtype. ``(H, W)`` is a grey image.
    eps : float, optional
        Added to the variance for stability; must be finite and > 0. Default ``1e-5`` (PyTorch's).
    weight, bias : scalar or (C,) array_like, optional
        Per-channel affine transform (``gamma``, ``beta``) applied after normalizing.

    Returns
    -------
    y : ndarray
        Same shape as ``x``; float64 for float64 input, float32 otherwise.

    Raises
    ------
    ValueError
        Bad shape, empty ``x``, a single spatial element per plane (``H * W == 1``, as
        PyTorch), bad ``eps``, ``weight``/``bias`` not of length C.
    TypeError
        ``x``, ``weight`` or ``bias`` with a bool, complex, object or string dtype.

    Notes
    -----
    For each image n and channel c: ``y = (x - mean) / sqrt(var + eps) * weight + bias`` with the
    mean and the biased variance taken over H and W. Equals
    ``torch.nn.functional.instance_norm`` (``use_input_stats=True``) on the NCHW transpose.
    A 1x1 plane raises ``ValueError`` like PyTorch ("Expected more than 1 spatial element"),
    rather than silently returning ``bias``. NaN/inf poison their own plane only. Cost: O(size)
    time; memory: the result plus a few MiB of float64 blocks (all four functions).

    Examples
    --------
    >>> x = np.arange(8, dtype=np.uint8).reshape(2, 2, 2)
    >>> y = instance_norm(x)
    >>> y.dtype
    dtype('float32')
    >>> print(y[..., 0].round(3))
    [[-1.342 -0.447]
     [ 0.447  1.342]]
    """
    eps = _check_eps(eps)
    x4, ndim = _as_batch(x, func="instance_norm")
    _, h, w, c = x4.shape
    if h * w == 1:
        raise ValueError(
            "instance_norm: expected more than 1 spatial element per channel "
            f"(as PyTorch), got input of shape {np.shape(x)}"
        )
    weight = _affine_param(weight, "weight", c)
    bias = _affine_param(bias, "bias", c)
    y, _, _ = _normalize(x4, per_image=True, num_groups=None, eps=eps, weight=weight, bias=bias,
                         out_dtype=_out_dtype(x4.dtype))
    return _restore_ndim(y, ndim)


def _check_running(arr, name: str, num_channels: int, *, writeable: bool) -> np.ndarray:
    if writeable:
        if not isinstance(arr, np.ndarray):
            raise TypeError(
                f"{name} must be a float numpy array of length C={num_channels} (it is updated "
                f"in place when training), got {type(arr).__name__}"
            )
        if arr.dtype.kind != "f":
            raise TypeError(
                f"{name} must have a floating dtype to be updated in place, got {arr.dtype}"
            )
    else:
        arr = np.asarray(arr)
        _check_numeric_dtype(arr.dtype, name)
    if arr.shape != (num_channels,):
        raise ValueError(
            f"{name} has shape {arr.shape}, expected one value per channel (length C={num_channels})"
        )
    if writeable and not arr.flags.writeable:
        raise ValueError(f"{name} is read-only; it must be writeable to be updated in place")
    return arr


def batch_norm(x, running_mean, running_var, *, weight=None, bias=None, training=True,
               momentum=0.1, eps=1e-5):
    """Batch norm: normalize each channel with statistics over the whole batch (N, H, W).

    Parameters
    ----------
    x : (N, H, W, C), (H, W, C) or (H, W) array_like
        A batch, channels last; ``(H, W, C)`` is a batch of one, ``(H, W)`` one grey image.
    running_mean, running_var : (C,) float ndarray or None
        Running statistics. When training they may be ``None``; if given (both, as writeable
        float arrays) they are updated IN PLACE exactly as ``torch.nn.functional.batch_norm``
        does. When not training they are required and used to normalize.
    weight, bias : scalar or (C,) array_like, optional
        Per-channel affine transform applied after normalizing.
    training : bool, optional
        ``True`` (default): normalize with the batch statistics and update the running ones.
        ``False``: normalize with ``running_mean``/``running_var``.
    momentum : float, optional
        Weight of the new batch in the running average, in [0, 1]. Default ``0.1`` (PyTorch's).
        ``None`` (PyTorch's cumulative average) is only meaningful across calls; use
        :class:`RunningStats` for it.
    eps : float, optional
        Added to the variance; finite and > 0. Default ``1e-5``.

    Returns
    -------
    y : ndarray
        Same shape as ``x``; float64 for float64 input, float32 otherwise.

    Raises
    ------
    ValueError
        Bad shape, empty ``x``, one value per channel when training (``N * H * W == 1``, as
        PyTorch), missing running statistics when not training, a negative ``running_var`` when
        not training, only one of the running arrays given, wrong lengths, bad ``eps`` or
        ``momentum``.
    TypeError
        Non-numeric dtypes; running arrays that cannot be updated in place (not a float ndarray);
        non-bool ``training``.

    Notes
    -----
    Training: ``y = (x - mean) / sqrt(var + eps) * weight + bias`` with the mean and the biased
    variance over N, H, W per channel, then ``run_mean = (1-m) run_mean + m mean`` and
    ``run_var = (1-m) run_var + m var * n/(n-1)`` (unbiased, ``n = N*H*W``), computed in float64
    and stored in the running arrays' own dtype. Evaluation: the same formula with the running
    statistics. NaN/inf in ``x`` poison their channel (and, when training, its running statistics).

    Examples
    --------
    >>> x = np.arange(8, dtype=np.float64).reshape(2, 2, 2, 1)
    >>> rm, rv = np.zeros(1), np.ones(1)
    >>> print(batch_norm(x, rm, rv).ravel().round(3))
    [-1.528 -1.091 -0.655 -0.218  0.218  0.655  1.091  1.528]
    >>> print(rm, rv.round(3))
    [0.35] [1.5]
    >>> print(batch_norm(x, rm, rv, training=False).ravel().round(3))
    [-0.286  0.531  1.347  2.164  2.98   3.797  4.613  5.43 ]
    """
    eps = _check_eps(eps)
    momentum = _check_momentum(momentum)
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"training must be a bool, got {training!r}")
    x4, ndim = _as_batch(x, func="batch_norm")
    n_img, h, w, c = x4.shape
    weight = _affine_param(weight, "weight", c)
    bias = _affine_param(bias, "bias", c)
    out_dtype = _out_dtype(x4.dtype)

    if training:
        if (running_mean is None) != (running_var is None):
            raise ValueError("running_mean and running_var must be given together (or both None)")
        if running_mean is not None:
            running_mean = _check_running(running_mean, "running_mean", c, writeable=True)
            running_var = _check_running(running_var, "running_var", c, writeable=True)
        n = n_img * h * w
        if n == 1:
            raise ValueError(
                "batch_norm: expected more than 1 value per channel when training, got input of "
                f"shape {np.shape(x)}"
            )
        y, mean, var = _normalize(x4, per_image=False, num_groups=None, eps=eps, weight=weight,
                                  bias=bias, out_dtype=out_dtype)
        if running_mean is not None:
            _ema_update(running_mean, running_var, mean.reshape(c), var.reshape(c), n, momentum)
        return _restore_ndim(y, ndim)

    if running_mean is None or running_var is None:
        raise ValueError("running_mean and running_var are required when training=False")
    rm = _check_running(running_mean, "running_mean", c, writeable=False).astype(np.float64)
    rv = _check_running(running_var, "running_var", c, writeable=False).astype(np.float64)
    if np.any(rv < 0):
        raise ValueError(f"running_var must be >= 0, got {rv.tolist()}")
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        y = _apply(x4, rm[None], np.sqrt(rv + eps)[None], per_image=False, weight=weight,
                   bias=bias, out_dtype=out_dtype)
    return _restore_ndim(y, ndim)


def layer_norm(x, *, eps=1e-5, weight=None, bias=None):
    """Layer norm: normalize each image as a whole, over H, W and C together.

    Parameters
    ----------
    x : (H, W), (H, W, C) or (N, H, W, C) array_like
        Image(s), channels last.
    eps : float, optional
        Added to the variance; finite and > 0. Default ``1e-5``.
    weight, bias : scalar, (C,) or image-shaped array_like, optional
        A scalar or a per-channel vector (broadcast over H and W), or an array with the shape of
        one image (``(H, W, C)``, or ``(H, W)`` for grey input) for PyTorch's elementwise affine.

    Returns
    -------
    y : ndarray
        Same shape as ``x``; float64 for float64 input, float32 otherwise.

    Raises
    ------
    ValueError
        Bad shape, empty ``x``, bad ``eps``, ``weight``/``bias`` of another shape.
    TypeError
        Non-numeric dtypes.

    Notes
    -----
    Per image: ``y = (x - mean) / sqrt(var + eps) * weight + bias``, mean and biased variance over
    (H, W, C). This is ``torch.nn.functional.layer_norm(x_nchw, (C, H, W), weight, bias)``; its
    elementwise weight is ``(C, H, W)``-shaped, so a per-channel ``weight`` here equals PyTorch's
    with ``weight[:, None, None]`` expanded over H and W (an ``(H, W, C)`` weight here is its
    transpose). A single-element image gives ``bias`` (PyTorch does not raise).

    Examples
    --------
    >>> x = np.arange(4, dtype=np.float32).reshape(1, 2, 2)
    >>> print(layer_norm(x).ravel().round(3))
    [-1.342 -0.447  0.447  1.342]
    >>> print(layer_norm(x, weight=[2.0, 1.0]).ravel().round(3))
    [-2.683 -0.447  0.894  1.342]
    """
    eps = _check_eps(eps)
    x_shape = np.shape(x)
    x4, ndim = _as_batch(x, func="layer_norm")
    c = x4.shape[3]
    image_shape = tuple(x_shape[-3:]) if ndim >= 3 else tuple(x_shape)
    weight = _affine_param(weight, "weight", c, full_shape=image_shape)
    bias = _affine_param(bias, "bias", c, full_shape=image_shape)
    y, _, _ = _normalize(x4, per_image=True, num_groups=1, eps=eps, weight=weight, bias=bias,
                         out_dtype=_out_dtype(x4.dtype))
    return _restore_ndim(y, ndim)


def group_norm(x, num_groups, *, eps=1e-5, weight=None, bias=None):
    """Group norm: split the channels into groups and normalize each image's groups.

    Parameters
    ----------
    x : (H, W), (H, W, C) or (N, H, W, C) array_like
        Image(s), channels last.
    num_groups : int
        Number of groups; must divide C. Group g holds channels ``[g*C/G, (g+1)*C/G)``.
        ``num_groups=1`` is layer norm with a per-channel affine; ``num_groups=C`` is instance
        norm (except that a 1x1 plane gives ``bias`` instead of an error, as in PyTorch).
    eps : float, optional
        Added to the variance; finite and > 0. Default ``1e-5``.
    weight, bias : scalar or (C,) array_like, optional
        Per-channel affine transform applied after normalizing.

    Returns
    -------
    y : ndarray
        Same shape as ``x``; float64 for float64 input, float32 otherwise.

    Raises
    ------
    ValueError
        ``num_groups`` < 1 or not dividing C, bad shape, empty ``x``, bad ``eps``, wrong lengths.
    TypeError
        Non-integer ``num_groups``; non-numeric dtypes.

    Notes
    -----
    Per image n and group g: ``y = (x - mean) / sqrt(var + eps) * weight[c] + bias[c]``, mean and
    biased variance over H, W and the group's channels. Equals ``torch.nn.functional.group_norm``.

    Examples
    --------
    >>> x = np.arange(8, dtype=np.float64).reshape(2, 1, 4)
    >>> print(group_norm(x, 2)[..., :2].ravel().round(3))  # group 0: channels 0, 1 = 0, 1, 4, 5
    [-1.213 -0.728  0.728  1.213]
    """
    eps = _check_eps(eps)
    if isinstance(num_groups, (bool, np.bool_)) or not isinstance(num_groups, numbers.Integral):
        raise TypeError(f"num_groups must be an integer, got {num_groups!r}")
    num_groups = int(num_groups)
    if num_groups < 1:
        raise ValueError(f"num_groups must be >= 1, got {num_groups}")
    x4, ndim = _as_batch(x, func="group_norm")
    c = x4.shape[3]
    if c % num_groups:
        raise ValueError(
            f"group_norm: num_groups={num_groups} does not divide the number of channels C={c}"
        )
    weight = _affine_param(weight, "weight", c)
    bias = _affine_param(bias, "bias", c)
    y, _, _ = _normalize(x4, per_image=True, num_groups=num_groups, eps=eps, weight=weight,
                         bias=bias, out_dtype=_out_dtype(x4.dtype))
    return _restore_ndim(y, ndim)


# --------------------------------------------------------------------------- streaming statistics


class RunningStats:
    """Per-channel statistics accumulated over a stream of batches (for fitting batch norm).

    Two things are tracked side by side, all in float64:

    - exact statistics of everything seen so far: ``count``, ``mean``, ``var`` (biased) and
      ``var_unbiased``, merged batch by batch with Chan et al.'s parallel update, so the result
      equals the statistics of all batches concatenated (up to rounding), whatever the batch sizes;
    - PyTorch's running statistics ``running_mean``/``running_var``, starting from its defaults
      (0 and 1) and updated once per batch exactly as :func:`batch_norm` in training does.

    Parameters
    ----------
    num_channels : int, optional
        C, if known up front (then ``running_mean``/``running_var`` are available before the first
        update, as PyTorch's defaults). Otherwise it is fixed by the first batch.

    Notes
    -----
    Chan et al. (1979): for totals ``(n_a, mean_a, M2_a)`` and a batch ``(n_b, mean_b, M2_b)``,
    ``delta = mean_b - mean_a``, ``n = n_a + n_b``, ``mean = mean_a + delta * n_b / n``,
    ``M2 = M2_a + M2_b + delta**2 * n_a * n_b / n``; ``var = M2 / n``. Each batch's own mean and
    ``M2`` are computed two-pass in float64. NaN/inf in a batch propagate into every statistic of
    their channel. Every batch must have more than one value per channel (as :func:`batch_norm`
    in training), because the running variance uses the batch's unbiased variance.

    Examples
    --------
    >>> rs = RunningStats()
    >>> rs.update(np.arange(4.0).reshape(2, 2, 1), momentum=0.1)
    >>> rs.update(np.arange(4.0, 8.0).reshape(2, 2, 1), momentum=0.1)
    >>> rs.count, rs.mean, rs.var
    (8, array([3.5]), array([5.25]))
    >>> print(rs.running_mean.round(4), rs.running_var.round(4))
    [0.685] [1.1267]
    """

    def __init__(self, num_channels=None):
        if num_channels is not None:
            if isinstance(num_channels, (bool, np.bool_)) or not isinstance(
                num_channels, numbers.Integral
            ):
                raise TypeError(f"num_channels must be an integer, got {num_channels!r}")
            if num_channels < 1:
                raise ValueError(f"num_channels must be >= 1, got {num_channels}")
            num_channels = int(num_channels)
        self._c = num_channels
        self._count = 0
        self._mean = None
        self._m2 = None
        self._running_mean = None
        self._running_var = None
        self._num_batches = 0
        if num_channels is not None:
            self._init_arrays(num_channels)

    def _init_arrays(self, c: int) -> None:
        self._c = c
        self._mean = np.zeros(c)
        self._m2 = np.zeros(c)
        self._running_mean = np.zeros(c)
        self._running_var = np.ones(c)

    def update(self, batch, *, momentum=None) -> None:
        """Add one batch ``(N, H, W, C)`` (or one image ``(H, W, C)``/``(H, W)``).

        Parameters
        ----------
        batch : array_like
            Real integer or floating values, channels last, with the same C as earlier batches.
        momentum : float or None, optional
            Weight of this batch in ``running_mean``/``running_var``, in [0, 1] (PyTorch's
            ``BatchNorm2d`` default is ``0.1``). ``None`` (default) is PyTorch's
            ``momentum=None``: a cumulative moving average, weight ``1 / num_batches_tracked``,
            i.e. every batch's mean and unbiased variance count equally.
        """
        if momentum is not None:
            momentum = _check_momentum(momentum)
        x4, _ = _as_batch(batch, func="RunningStats.update")
        n_img, h, w, c = x4.shape
        if self._c is not None and c != self._c:
            raise ValueError(f"batch has C={c} channels, but earlier batches had C={self._c}")
        n_b = n_img * h * w
        if n_b == 1:
            raise ValueError(
                "RunningStats.update: expected more than 1 value per channel in a batch, got "
                f"input of shape {np.shape(batch)}"
            )
        if self._mean is None:
            self._init_arrays(c)
        with np.errstate(invalid="ignore", over="ignore"):
            mean_b, var_b = _moments(x4, per_image=False, num_groups=c)
            mean_b, var_b = mean_b[0], var_b[0]
            m2_b = var_b * n_b
            n_a = self._count
            n = n_a + n_b
            delta = mean_b - self._mean
            self._mean = self._mean + delta * (n_b / n)
            self._m2 = self._m2 + m2_b + np.square(delta) * (n_a * n_b / n)
        self._count = n
        self._num_batches += 1
        factor = momentum if momentum is not None else 1.0 / self._num_batches
        _ema_update(self._running_mean, self._running_var, mean_b, var_b, n_b, factor)

    def _require_data(self, what: str) -> None:
        if self._count == 0:
            raise ValueError(f"RunningStats.{what} is undefined before the first update()")

    @property
    def num_channels(self) -> int | None:
        """C, or ``None`` before the first batch when not given to the constructor."""
        return self._c

    @property
    def count(self) -> int:
        """Values seen per channel (``sum of N*H*W`` over the batches)."""
        return self._count

    @property
    def num_batches_tracked(self) -> int:
        """Number of ``update()`` calls, as PyTorch's ``num_batches_tracked``."""
        return self._num_batches

    @property
    def mean(self) -> np.ndarray:
        """Exact per-channel mean of all values seen, float64 ``(C,)``."""
        self._require_data("mean")
        return self._mean.copy()

    @property
    def var(self) -> np.ndarray:
        """Exact per-channel biased variance (divide by ``count``), float64 ``(C,)``."""
        self._require_data("var")
        return self._m2 / self._count

    @property
    def var_unbiased(self) -> np.ndarray:
        """Exact per-channel unbiased variance (divide by ``count - 1``), float64 ``(C,)``."""
        self._require_data("var_unbiased")
        return self._m2 / (self._count - 1)

    @property
    def running_mean(self) -> np.ndarray:
        """PyTorch-style running mean (starts at 0), float64 ``(C,)``, a copy."""
        if self._running_mean is None:
            raise ValueError("RunningStats.running_mean is undefined before C is known")
        return self._running_mean.copy()

    @property
    def running_var(self) -> np.ndarray:
        """PyTorch-style running (unbiased) variance (starts at 1), float64 ``(C,)``, a copy."""
        if self._running_var is None:
            raise ValueError("RunningStats.running_var is undefined before C is known")
        return self._running_var.copy()

    def __repr__(self) -> str:
        return (
            f"RunningStats(num_channels={self._c}, count={self._count}, "
            f"num_batches_tracked={self._num_batches})"
        )


# --------------------------------------------------------------------------- band by band


class NormBands:
    """Instance, layer or group norm of one ``(H, W, C)`` image given band by band, bit for bit.

    :func:`_moments` reduces blocks of :func:`_block_rows` rows from row 0, each made float64
    and summed by the same ``einsum`` into one accumulator in order; here the bands (any sizes,
    rows in order) are cut into the same blocks, rows of a block split between bands waiting for
    the rest. Three passes: :meth:`add` the rows, :meth:`end_pass` (the mean); :meth:`add` them
    again, :meth:`end_pass` (the variance); then :meth:`apply` any band (elementwise, as
    :func:`_apply`). :meth:`make` gives ``None`` where the in-memory function raises (it says
    why), except a ``num_groups`` not dividing C, raised here in the same words.
    """

    def __init__(self, shape, dtype, num_groups: int, eps: float, weight, bias):
        self.shape, self.out_dtype = tuple(shape), _out_dtype(np.dtype(dtype))
        self.num_groups, self.eps, self.weight, self.bias = num_groups, eps, weight, bias
        self.blocks = RowBlocks(_block_rows(self.shape[1], self.shape[2]))
        self.sums, self.squares = np.zeros((1, shape[2])), np.zeros((1, shape[2]))
        self.passes = 0  # passes ended: 0 the sums, 1 the squares, 2 ready to apply
        self.mean = self.scale = None

    @classmethod
    def make(cls, kind: str, shape, dtype, *, eps=1e-5, weight=None, bias=None,
             num_groups: int | None = None):
        """``kind``: ``"instance"``, ``"layer"`` or ``"group"`` (with ``num_groups``)."""
        h, w, c = (int(v) for v in shape)
        groups = {"instance": c, "layer": 1, "group": num_groups}.get(kind)
        if np.dtype(dtype).kind not in "uif" or h * w * c == 0 or (kind == "instance"
                                                                    and h * w == 1):
            return None
        if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
            return None
        if c % groups:
            raise ValueError(f"group_norm: num_groups={groups} does not divide the number "
                             f"of channels C={c}")
        full = (h, w, c) if kind == "layer" else None
        return cls((h, w, c), dtype, groups, _check_eps(eps),
                   _affine_param(weight, "weight", c, full), _affine_param(bias, "bias", c, full))

    def add(self, band) -> None:
        """The next rows ``(n, W, C)`` of the current statistics pass."""
        if self.passes > 1:
            raise ValueError("NormBands.add: the statistics are complete; apply() the bands")
        for rows in self.blocks.feed(np.asarray(band).reshape(-1, *self.shape[1:])):
            self._fold(rows)

    def _fold(self, rows) -> None:
        if rows is None:
            return
        block = np.ascontiguousarray(rows).astype(np.float64).reshape(-1, self.shape[2])
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            if self.passes == 0:
                self.sums[0] += np.einsum("kc->c", block)
            else:
                block -= self.mean[0]
                self.squares[0] += np.einsum("kc,kc->c", block, block)

    def end_pass(self) -> None:
        """End pass 1 (the mean is known) or pass 2 (the variance: ready to apply)."""
        if self.passes > 1:
            raise ValueError("NormBands.end_pass: both statistics passes have ended")
        self._fold(self.blocks.rest())
        h, w, c = self.shape
        count = h * w * (c // self.num_groups)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            if self.passes == 0:
                self.mean = _group_sum(self.sums, self.num_groups) / count
            else:
                self.scale = np.sqrt(_group_sum(self.squares, self.num_groups) / count + self.eps)
        self.passes += 1

    def apply(self, band, r0: int) -> np.ndarray:
        """Image rows ``[r0, r0 + n)`` (``band``: ``(n, W, C)``) normalized, in the in-memory
        result's dtype: the same values as those rows of the whole image's result."""
        if self.passes != 2:
            raise ValueError("NormBands.apply: run both statistics passes first")
        w, c = self.shape[1:]
        block = np.asarray(band).astype(np.float64).reshape(-1, c)
        out = np.empty((block.shape[0] // w, w, c), dtype=self.out_dtype)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            out[...] = _apply_block(block, self.mean[0], self.scale[0], self.weight, self.bias,
                                    r0, w)
        return out
