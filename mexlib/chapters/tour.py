"""Chapter 00 · A guided tour: what is an early exit? (``notebooks/00_tour``): a light chapter.
The tour keeps the code it teaches (a model, its exits, a threshold, the regimes); this module
declares what it writes, for the report."""

NOTEBOOK = "00_tour"
TITLE = "A guided tour: what is an early exit?"
FIGURES = ("tour_predictions", "tour_threshold", "tour_regimes")
TABLES = ()
