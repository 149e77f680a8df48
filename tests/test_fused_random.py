"""The hand-derived dense step against autograd on randomly drawn models, losses and regularizers.

``test_fused.py`` checks chosen combinations; here hypothesis draws them: depth,
widths, activations, tied decoders, batch sizes, one to three weighted losses,
and any mix of the penalties and corruptions the step covers.  Wherever
:meth:`DenseChainStep.build` accepts the draw, the step's terms and every
parameter's gradient must equal those of ``Autoencoder.loss_terms`` + backward
(computed in float64, so that only the formulas, not rounding, can differ).
Draws the step does not cover must build no step, never a wrong one.
"""

import os

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aekit
from aekit import fused
from aekit import regularizers as reg
from aekit.fused import DenseChainStep

# AEKIT_FUZZ_EXAMPLES=2000 for a deeper hunt (as in test_fuzz.py).
EXAMPLES = settings(
    max_examples=int(os.environ.get("AEKIT_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
ACTIVATIONS = sorted({*fused.ACTIVATIONS, *fused.PRE_ACTIVATIONS, "prelu"})
N_IN = 9


@st.composite
def models(draw):
    """(layers, losses, regularizer keywords, batch size)."""
    depth = draw(st.integers(1, 3))  # hidden layers up to the code
    widths = [draw(st.integers(2, 7)) for _ in range(depth)]
    acts = [draw(st.sampled_from(ACTIVATIONS)) for _ in range(2 * depth)]
    layers: list = [N_IN]
    layers += [(w, a) for w, a in zip(widths, acts)]
    decoder_sizes = [*reversed(widths[:-1]), N_IN]
    tied = draw(st.booleans())
    for size, act in zip(decoder_sizes, acts[depth:]):
        layers.append({"size": size, "form": "tied", "activation": act} if tied else (size, act))
    names = [f"hid{i}" for i in range(1, 2 * depth)]
    loss_names = draw(st.lists(st.sampled_from(["mse", "mae", "bce"]), min_size=1, max_size=3, unique=True))
    if "bce" in loss_names:  # the step takes the cross-entropy from a sigmoid output's logits only
        last = layers[-1]
        layers[-1] = {**last, "activation": "sigmoid"} if isinstance(last, dict) else (last[0], "sigmoid")
    losses = [(name, draw(st.sampled_from([1.0, 0.5, 0.0, 2.0]))) for name in loss_names]
    kwargs = {}
    for key, values in (
        ("weight_l1", [1e-2, 0.5]),
        ("weight_l2", [1e-2, 0.0, 2.0]),
        ("hidden_l1", [0.1, 0.0]),
        ("hidden_l2", [0.2]),
        ("input_noise", [0.1]),
        ("input_dropout", [0.3]),
        ("hidden_noise", [0.2]),
        ("hidden_dropout", [0.4]),
        ("contractive", [0.3]),
    ):
        if draw(st.integers(0, 3)) == 0:
            value = draw(st.sampled_from(values))
            # sometimes on one named layer only
            kwargs[key] = (
                {draw(st.sampled_from(names)): value}
                if draw(st.booleans())
                and key != "input_noise"
                and key != "input_dropout"
                and not key.startswith("weight")
                else value
            )
            if key.startswith("weight") and draw(st.booleans()):  # patterns: each averages its own matrices
                kwargs[key] = {"hid1.w": value, "*.w": draw(st.sampled_from([0.0, 0.3]))}
    if "contractive" in kwargs and draw(st.booleans()):  # the step's case: the first hidden layer
        kwargs["contractive"] = {"hid1": 0.3}
    if draw(st.integers(0, 3)) == 0:
        kwargs["sparsity_target"] = draw(st.sampled_from([0.05, 0.3]))
    return layers, losses, kwargs, draw(st.sampled_from([1, 4, 13]))


@EXAMPLES
@given(model=models(), seed=st.integers(0, 2**16))
def test_random_models_match_autograd(model, seed):
    layers, losses, kwargs, n = model
    net = aekit.Autoencoder(layers, loss=losses[0][0], rng=seed)
    net.set_loss(*losses[0])
    for name, weight in losses[1:]:
        net.add_loss(name, weight=weight)
    regs = reg.Regularizers.from_kwargs(code_layer=net.code_layer, **kwargs)
    step = DenseChainStep.build(net.objective(regs))
    # Everything drawn here is the step's, except a contractive penalty beyond the first hidden
    # layer or with input corruption: exactly those must be left to autograd.
    contractive_elsewhere = bool(set(reg.match(regs.contractive, net.graph.hidden_names)) - {"hid1"})
    uncovered = bool(regs.contractive) and (contractive_elsewhere or bool(regs.input_noise or regs.input_dropout))
    assert (step is None) == uncovered, (layers, kwargs)
    if step is None:
        return  # autograd's path: nothing to compare
    net.graph.double()
    x = torch.from_numpy(np.random.default_rng(seed).random((n, N_IN)))
    torch.manual_seed(seed)
    for p in net.params:
        p.grad = None
    total, terms = net.loss_terms(x, None, regs, training=True)
    total.backward()
    expected = [float(terms[k].detach()) for k in step.keys]
    grads = [p.grad.clone() for p in net.params]
    torch.manual_seed(seed)  # the same noise and dropout draws
    values = step(x)
    np.testing.assert_allclose(values.numpy(), expected, rtol=1e-9, atol=1e-12)
    for p, g in zip(net.params, grads):
        np.testing.assert_allclose(p.grad.numpy(), g.numpy(), rtol=1e-8, atol=1e-11)
