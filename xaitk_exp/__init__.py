"""xaitk-exp: config-driven experiments for explaining image classifiers with xaitk-saliency, tracked in MLflow."""

__version__ = "0.1.0"
