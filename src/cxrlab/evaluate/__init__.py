"""Metrics, statistics, predictions and Grad-CAM."""
