"""Experiment trackers (``logger=`` config group): MLflow, TensorBoard, Weights & Biases.

``trackers.py`` runs them for one training run behind a guard (a tracker error never stops
training); ``sweep_runs.py`` gives a sweep its parent run. The tracking libraries are imported only
when their logger is chosen.
"""
