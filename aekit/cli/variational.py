"""The command line's variational-autoencoder commands: ``aekit nll`` and ``aekit sample``."""

from __future__ import annotations

import argparse

import numpy as np

from .files import check_output, load_model, read_data, write_array

__all__ = ["cmd_nll", "cmd_sample"]


def cmd_nll(args: argparse.Namespace) -> int:
    """``aekit nll``: print the importance-weighted negative log-likelihood of DATA (nats); optionally write it.

    Parameters
    ----------
    args : argparse.Namespace
        ``model`` (with a gaussian layer), ``data``, ``k`` (importance samples), ``seed`` and
        ``output`` (optional: the per-example figures, shape (n,)).

    Returns
    -------
    int
        The exit code: 0 (failures raise).
    """
    if args.output:
        check_output(args.output, inputs=[("MODEL", args.model), ("DATA", args.data)])
    net = load_model(args.model)
    args.cli_arrays = {"x": repr(args.data)}
    nll = net.nll(read_data(args.data), k=args.k, seed=args.seed)
    print(
        f"nll {nll.mean():.4f} nats per example (k={args.k}, {len(nll)} examples; median {np.median(nll):.4f}, "
        f"max {nll.max():.4f} at row {int(nll.argmax())})"
    )
    if args.output:
        write_array(args.output, nll)
        print(f"wrote {len(nll)} per-example figures to {args.output}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """``aekit sample``: write the decoder means of ``--n`` draws of the prior of a VAE.

    Parameters
    ----------
    args : argparse.Namespace
        ``model``, ``n``, ``seed`` and ``output`` (.npy or .csv).

    Returns
    -------
    int
        The exit code: 0 (failures raise).
    """
    check_output(args.output, inputs=[("MODEL", args.model)])
    net = load_model(args.model)
    samples = net.sample(args.n, seed=args.seed)
    write_array(args.output, samples)
    print(f"wrote {len(samples)} samples of shape {samples.shape[1:]} to {args.output}")
    return 0
