"""High level: flavour functions (mlflow.sklearn.log_model, mlflow.log_text) over the fluent API: the mid level's
fluent calls, with MLflow's own model logging and text artifacts."""

from __future__ import annotations

from typing import Any

from xaitk_exp.schema import MODEL_DIR, logged_model_name
from xaitk_exp.security.trust import trusted_types
from xaitk_exp.tracking.limits import safe_artifact_path
from xaitk_exp.tracking.mid import MidTracker
from xaitk_exp.tracking.model_io import pip_requirements
from xaitk_exp.tracking.tracker import Tracker


class HighTracker(MidTracker):
    level = "high"

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._mlflow.log_text(self._scrub(text), safe_artifact_path(artifact_file) or "file.txt", run_id=run_id)

    def log_dict(self, run_id: str, obj: Any, artifact_file: str) -> None:
        if artifact_file.endswith(".json"):
            import json

            # same bytes as the other levels: sorted keys, indent 2
            text = json.dumps(obj, indent=2, sort_keys=True, default=str)
            self._mlflow.log_text(self._scrub(text), safe_artifact_path(artifact_file) or "file.json", run_id=run_id)
        else:
            Tracker.log_dict(self, run_id, obj, artifact_file)

    def _log_model(self, run_id: str, model: Any, input_example: Any, saved_dir: str) -> str:
        """``mlflow.sklearn.log_model`` makes the logged model linked to the run (the UI's Logged models column); the
        saved folder also goes to the run's own ``sklearn-model/`` artifacts, where every level puts it, so the
        run's artifact tree is the same at every level. A run that is not this thread's active one gets the
        client calls of the other levels."""
        if not self._is_active(run_id):
            return Tracker._log_model(self, run_id, model, input_example, saved_dir)
        self._model_runs.add(run_id)
        info = self._mlflow.sklearn.log_model(
            model,
            name=logged_model_name(type(model).__name__),
            input_example=input_example,
            skops_trusted_types=trusted_types(model),
            pip_requirements=pip_requirements(),
        )
        self._log_artifacts(run_id, saved_dir, MODEL_DIR)
        return str(info.model_id)
