"""scalelab: a laboratory for the empirical science of language-model scaling."""

__version__ = "0.2.0"
