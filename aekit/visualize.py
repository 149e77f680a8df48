"""Pictures of what an autoencoder learned: the old module path, kept importable.

The functions live in :mod:`aekit.inspect.features` (what units learned),
:mod:`aekit.inspect.plots` (plots of a model on its data) and :mod:`aekit.inspect.pictures`
(image shapes, tile mosaics, picture files; the formats are described there); this module
re-exports them under their old path.
"""

from .inspect.densities import plot_densities
from .inspect.features import feature_images, save_features, save_top_inputs, top_inputs
from .inspect.pictures import MAX_PIXELS as MAX_PIXELS
from .inspect.pictures import _figure_bytes as _figure_bytes
from .inspect.pictures import image_shape, save_tiles, tile_mosaic
from .inspect.plots import plot_activations, plot_codes, plot_history, plot_reconstructions

__all__ = [
    "feature_images",
    "image_shape",
    "plot_activations",
    "plot_codes",
    "plot_densities",
    "plot_history",
    "plot_reconstructions",
    "save_features",
    "save_tiles",
    "save_top_inputs",
    "tile_mosaic",
    "top_inputs",
]
