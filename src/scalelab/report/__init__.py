"""Reports: the interactive HTML report (plotly, self-contained) and static figures (matplotlib)."""
