"""taxotrain: train, tune, evaluate and ship taxonomy-aware classifiers for biodiversity data."""

__version__ = "0.1.0"
