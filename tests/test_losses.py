import math

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

from aekit import ConfigurationError
from aekit import losses as L


def _pair(shape=(4, 5)):
    g = torch.Generator().manual_seed(0)
    out = torch.rand(shape, generator=g, dtype=torch.float64) * 0.8 + 0.1
    target = torch.rand(shape, generator=g, dtype=torch.float64)
    return out, target


def test_values_match_references():
    out, target = _pair()
    assert torch.isclose(L.mse(out, target), torch.nn.functional.mse_loss(out, target))
    assert torch.isclose(L.mae(out, target), torch.nn.functional.l1_loss(out, target))
    assert torch.isclose(L.bce(out, target), torch.nn.functional.binary_cross_entropy(out, target))
    logits = torch.logit(out)
    assert torch.isclose(L.bce_with_logits(logits, target), L.bce(out, target))


def test_kl_matches_scipy():
    from scipy.stats import entropy

    p = torch.softmax(torch.randn(3, 6, dtype=torch.float64), dim=1)
    q = torch.softmax(torch.randn(3, 6, dtype=torch.float64), dim=1)
    expected = np.mean([entropy(p[i].numpy(), q[i].numpy()) for i in range(3)])
    assert math.isclose(L.kl(q, p).item(), expected, rel_tol=1e-5)


def test_gll_matches_scipy_with_the_true_log_determinant():
    from scipy.stats import multivariate_normal

    mean, target = _pair((3, 4))
    var = torch.rand(3, 4, dtype=torch.float64) + 0.5
    expected = -np.mean(
        [multivariate_normal(mean[i].numpy(), np.diag(var[i].numpy())).logpdf(target[i].numpy()) for i in range(3)]
    )
    assert math.isclose(L.gll(mean, target, var).item(), expected, rel_tol=1e-9)


def test_weighted_losses_ignore_zero_weight_entries():
    out, target = _pair()
    w = torch.ones_like(out)
    w[:, 2:] = 0
    for fn in (L.mse, L.mae, L.bce):
        assert torch.isclose(fn(out, target, w), fn(out[:, :2], target[:, :2]))


@pytest.mark.parametrize("name", ["mse", "mae", "bce", "kl"])
def test_gradcheck_every_loss(name):
    out, target = _pair()
    out.requires_grad_(True)
    fn = L.LOSSES[name]
    assert gradcheck(lambda o: fn(o, target), (out,), eps=1e-6, atol=1e-5)
    w = torch.rand_like(target)
    assert gradcheck(lambda o: fn(o, target, w), (out,), eps=1e-6, atol=1e-5)


def test_gradcheck_gll_and_logits():
    mean, target = _pair()
    var = (torch.rand_like(mean) + 0.5).requires_grad_(True)
    mean.requires_grad_(True)
    assert gradcheck(lambda m, v: L.gll(m, target, v), (mean, var), eps=1e-6, atol=1e-5)
    logits = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda z: L.bce_with_logits(z, target), (logits,), eps=1e-6, atol=1e-5)


def test_loss_object_errors():
    with pytest.raises(ConfigurationError, match="did you mean 'mse'"):
        L.Loss("mes")
    with pytest.raises(ConfigurationError, match="covar"):
        L.Loss("gll")
    with pytest.raises(ConfigurationError, match="weight must be finite"):
        L.Loss("mse", weight=-1)
