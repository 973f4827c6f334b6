"""Chapter 00 · The data (``notebooks/00_data``): a light chapter. The notebook itself shows
how the data are loaded, split and augmented (the code it teaches); this module declares what it
writes, for the report."""

NOTEBOOK = "00_data"
TITLE = "The data"
FIGURES = ("data_samples", "data_class_balance", "data_augmentation")
TABLES = ("data_class_balance",)
