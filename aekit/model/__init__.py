"""The model: layer specs, activations, sparsity, constraints, the layer graph and inference."""
