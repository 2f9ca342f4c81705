"""Compute economics: FLOPs, MFU, memory for training and serving, time and dollars, published models.

Everything here is analytic: no model weights are ever allocated, and torch is never imported.
"""
