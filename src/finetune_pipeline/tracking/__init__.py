"""Experiment trackers (``logger=`` config group): MLflow, TensorBoard, Weights & Biases.

``trackers.py`` is what training calls (``Trackers``: queued to a helper process); ``helper.py`` is
that process, running the trackers behind a guard (a tracker error never stops training);
``sweep_runs.py`` gives a sweep its parent run. The tracking libraries are imported only in the
helper, and only for the loggers chosen.
"""
