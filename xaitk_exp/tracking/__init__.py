"""Tracking: the only room that talks to MLflow.

- :mod:`.tracker`: the interface the stages use (run lifecycle with honest statuses, logging, reads);
- :mod:`.high`, :mod:`.mid`, :mod:`.low`: its three implementations, one per MLflow API level (flavour functions,
  the fluent API, ``MlflowClient`` with batched writes); :mod:`.factory` opens the one ``logging.level`` names;
- :mod:`.stores`: which store a job writes to, and opening SQLite safely;
- :mod:`.model_io`: scikit-learn models in and out of MLflow; :mod:`.limits`: MLflow's limits and safe names;
  :mod:`.signals`: SIGTERM as an exception so runs close KILLED.
"""
