"""Reads every tracking level shares: search, get, download, through ``MlflowClient``; and credential scrubbing of
what comes back from the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xaitk_exp.errors import TrackingError
from xaitk_exp.security.redact import redact_text, redact_uri
from xaitk_exp.tracking.limits import safe_artifact_path, short_error


class StoreReader:
    """The read side of a :class:`~xaitk_exp.tracking.tracker.Tracker` (``self.client``, ``self.uri`` are set by it)."""

    client: Any
    uri: str

    def search(
        self,
        experiment_ids: list[str],
        filter_string: str = "",
        order_by: list[str] | None = None,
        max_results: int = 1000,
    ) -> list[Any]:
        """Runs matching an MLflow filter string, as ``mlflow.entities.Run`` objects."""
        from mlflow.exceptions import MlflowException

        try:
            return list(
                self.client.search_runs(
                    experiment_ids, filter_string=filter_string, order_by=order_by, max_results=max_results
                )
            )
        except MlflowException as exc:
            raise TrackingError(self._scrub(short_error(exc))) from exc

    def get_run(self, run_id: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id)
        except MlflowException as exc:
            raise TrackingError(f"run {run_id!r} does not exist in {self.display_uri}") from exc

    def _scrub(self, text: str) -> str:
        """``text`` without the credentials of the tracking URI (MLflow's errors quote the URL it called)."""

        return redact_text(text, self.uri)

    def _secret_text(self, local_path: str) -> str | None:
        """The scrubbed text of a small text file that quotes the tracking URI's credentials, else None."""
        if "@" not in self.uri or Path(local_path).suffix.lower() not in (".csv", ".json", ".yaml", ".yml", ".txt"):
            return None
        try:
            text = Path(local_path).read_text()
        except (OSError, UnicodeDecodeError):
            return None
        clean = self._scrub(text)
        return clean if clean != text else None

    @property
    def display_uri(self) -> str:

        return redact_uri(self.uri)

    def download(self, run_id: str, artifact_path: str, dst: str) -> str:
        return str(self.client.download_artifacts(run_id, safe_artifact_path(artifact_path) or "", dst))

