"""Float sums past the dtype's range give inf, as PyTorch's CPU kernels do, without warnings."""

import warnings

import numpy as np
import pytest

from poolcli import ops

CASES = [
    ("avg 2x2", lambda x: ops.avg_pool2d(x, 2), lambda F, t: F.avg_pool2d(t, 2)),
    ("global avg", ops.global_avg_pool2d, lambda F, t: F.adaptive_avg_pool2d(t, 1)),
    ("adaptive avg 3", lambda x: ops.adaptive_avg_pool2d(x, 3),
     lambda F, t: F.adaptive_avg_pool2d(t, 3)),
    ("lp 2", lambda x: ops.lp_pool2d(x, 2, 2), lambda F, t: F.lp_pool2d(t, 2, 2)),
]


@pytest.mark.parametrize("name,op,torch_op", CASES, ids=[c[0] for c in CASES])
def test_float32_overflow_is_inf_and_quiet(name, op, torch_op):
    x = np.full((8, 8, 3), 3e38, np.float32)
    x[:, :, 1] = 1.0  # a channel that stays finite
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = op(x)
    assert np.isinf(got[..., 0]).all() and np.isinf(got[..., 2]).all()
    assert np.isfinite(got[..., 1]).all()
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    want = torch_op(F, torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None])
    np.testing.assert_array_equal(got, want[0].numpy().transpose(1, 2, 0))


def test_unpool_sum_past_float32_range_is_inf_and_quiet():
    x = np.full((1, 3, 1), 1.1342746e38, np.float32)
    idx = np.zeros((1, 3, 1), np.int64)  # all three go to cell 0: their sum passes float32's max
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = ops.max_unpool2d(x, idx, 1, output_size=(1, 3), reduce="sum")
    assert got[0, 0, 0] == np.inf and (got[0, 1:, 0] == 0).all()
