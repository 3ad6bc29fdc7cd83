"""Models: build and check scikit-learn estimators and store them (``sklearn``); the black boxes xaitk-saliency
queries, one per model source (``blackbox``)."""
