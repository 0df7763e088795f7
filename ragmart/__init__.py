"""ragmart: retrieval-augmented generation treated as a data-engineering problem."""

__version__ = "0.1.0"
