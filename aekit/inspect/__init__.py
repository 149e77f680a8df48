"""Look inside a model: what its units learned, plots, a diagnosis of why it does not learn, a report.

:mod:`~aekit.inspect.features` (feature pictures, top inputs), :mod:`~aekit.inspect.plots`
(reconstructions, curves, codes, activations), :mod:`~aekit.inspect.pictures` (image shapes,
tile mosaics, picture files), :mod:`~aekit.inspect.diagnose` and :mod:`~aekit.inspect.report`.
The functions are public as :mod:`aekit.visualize`, :func:`aekit.diagnose` and :mod:`aekit.report`.

The unit browser: :func:`browse` writes an interactive page with a card per unit
(:mod:`~aekit.inspect.browser`), and :func:`top_activations` gives the rows that activate each
unit most, in one streamed pass (:mod:`~aekit.inspect.unit_scan`).

Sparse dictionaries: :func:`firing_densities` (each latent's firing density over all rows) and
their log-density histogram (:mod:`~aekit.inspect.densities`).
"""

from .browser import browse
from .densities import density_histogram, firing_densities, plot_densities
from .unit_scan import top_activations

__all__ = ["browse", "density_histogram", "firing_densities", "plot_densities", "top_activations"]
