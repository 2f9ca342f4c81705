"""Matplotlib figures without pyplot: scalelab never switches the user's backend (a notebook's inline
backend stays as it was) and its figures are not kept in pyplot's registry. `Figure.savefig` picks the
writer from the file's format (Agg for PNG), so no backend is needed to write files."""

from __future__ import annotations


def figure(figsize=None):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def subplots(nrows: int = 1, ncols: int = 1, figsize=None, **kw):
    """pyplot.subplots' (figure, axes), on a figure of its own."""
    fig = figure(figsize)
    return fig, fig.subplots(nrows, ncols, **kw)


def get_cmap(name: str):
    import matplotlib

    return matplotlib.colormaps[name]
