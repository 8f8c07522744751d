"""Gaussian heatmap volumes from keypoint clips: the API (``heatmaps``), the patch drawing (``drawing``)
and where the pixels land in the output's memory (``scatter_layout``)."""
