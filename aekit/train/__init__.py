"""Training: options, optimizers, the step, fused paths, the loop, callbacks, checkpoints and data parallelism."""
