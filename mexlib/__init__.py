"""mexlib: a reproducible study of how to train multi-exit (early-exit) models.

The library holds the data, models, trainers, run store, evaluation and plots behind the
notebooks in ``notebooks/``; see README.md for the two commands that use it.
"""

__version__ = "0.1.0"
