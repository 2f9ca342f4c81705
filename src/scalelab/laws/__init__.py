"""Scaling laws: forms, fitting (Chinchilla approaches 1-3, Kaplan), bootstrap, allocation, prediction.

    from scalelab.laws.table import load_table
    from scalelab.laws.fitting import fit_approach3
    law = fit_approach3(load_table("runs.csv"), bootstrap=200)
    law.predict(1e9, 2e10); law.allocate(1e21)
"""

from scalelab.laws.table import RunTable, load_table

__all__ = ["RunTable", "load_table"]
