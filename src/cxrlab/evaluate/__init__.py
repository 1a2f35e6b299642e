"""Metrics, statistics, Grad-CAM, and scoring finished runs.

``metrics`` is a leaf of plain numpy functions with no cxrlab imports; it is the one
module of this layer that ``train`` uses (to write a run's metrics.json). The rest of the
layer reads run directories through ``cxrlab.training.rundir``.
"""
