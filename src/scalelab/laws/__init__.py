"""Scaling laws: forms, fitting (Chinchilla approaches 1-3, Kaplan), bootstrap, allocation, prediction.

    from scalelab.laws import load_table, fit_approach3, published
    law = fit_approach3(load_table("runs.csv"), bootstrap=200)
    law.predict(N=1e9, D=2e10); law.allocate(1e21)
"""

from scalelab.laws.table import RunTable, load_table

__all__ = ["RunTable", "load_table"]
