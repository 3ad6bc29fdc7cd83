"""The MLflow UI in a real browser: what a person sees after the default pipeline, not what MLflow's API returns.

The pipeline writes a store; ``mlflow ui`` serves it on a free loopback port; headless Chromium renders the pages
(``--dump-dom`` for the rendered DOM, ``--screenshot`` for the pixels). ``.ci/run`` installs Chromium, so CI never
skips this.

A person types the seed's query into the runs table's search box (Chromium driven through its DevTools protocol
over a pipe, ``tests/cdp.py``): MLflow 3.17's table folds nested runs under their parent, so the evaluation's image
runs are top-level runs, linked to their summary by tag, and the typed query lists them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SEED_FILTER = "metrics.Predicted_class_conf >= 0.9 and tags.Predicted_class = '4'"
FIGURE = "Image_saliency_maps.png"
PNG = b"\x89PNG\r\n\x1a\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback)
        return response.read()


def browse(url: str, *flags: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Headless Chromium on ``url`` with a fresh profile; the flags keep it off the (closed) network."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--virtual-time-budget=20000", *flags, url,
        ]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """(base URL, store URI, server log): the default pipeline on 10 images, then ``mlflow ui`` on its store."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (as root: apt-get install -y chromium; .ci/run does it)")
    root = tmp_path_factory.mktemp("ui")
    proc = run_cli(["evaluation.num_images=10", "progress=false"], root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    uri = f"sqlite:///{root / 'outputs' / 'mlflow.db'}"
    port = _free_port()
    log_path = root / "mlflow-ui.log"
    mlflow = Path(sys.executable).with_name("mlflow")
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [str(mlflow), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True,  # its own process group
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, f"mlflow ui exited {server.returncode}: {log_path.read_text()[-2000:]}"
            try:
                if _get(f"{base}/health", timeout=2).strip() == b"OK":
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"mlflow ui did not answer /health: {log_path.read_text()[-2000:]}"
            time.sleep(0.5)
        yield base, uri, log_path
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)  # the server and its uvicorn worker, which this test started
            server.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


def test_the_seed_query_typed_into_the_search_box_lists_its_image_runs(ui, tmp_path):
    """A person opens the evaluation experiment's runs table, clicks the search box, types the seed's query and
    presses Enter: the matching image runs are listed themselves (top-level runs), and no other image run."""
    from cdp import Browser
    from mlflow import MlflowClient

    base, uri, _ = ui
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("MLPClassifier - Evaluation")
    images = [r.info.run_name for r in client.search_runs([exp.experiment_id], "tags.Run_type = 'image'")]
    matching = {r.info.run_name for r in client.search_runs([exp.experiment_id], SEED_FILTER)}
    assert matching and set(images) - matching, (matching, images)  # the page must show some runs and hide others
    box = 'input[data-testid="search-box"]'
    listed = "Array.from(document.querySelectorAll('a')).map(a => a.innerText)"
    with Browser(CHROMIUM) as browser:
        browser.open(f"{base}/#/experiments/{exp.experiment_id}/runs")  # as a person opens it: no filter, no sort
        browser.wait_for(f"document.querySelector('{box}') && {listed}.some(t => t.startsWith('ImageID-'))", 240)
        browser.click(box)
        browser.type(SEED_FILTER)
        browser.press("Enter", 13)
        browser.wait_for(f"{listed}.filter(t => t.startsWith('ImageID-')).length === {len(matching)}", 120)
        time.sleep(1)  # a table still settling would show more rows: look again
        shown = set(browser.evaluate(listed)) & set(images)
        assert browser.evaluate(f"document.querySelector('{box}').value") == SEED_FILTER
        browser.screenshot(tmp_path / "typed_query.png")
    assert shown == matching, f"listed {sorted(shown)}, the filter matches {sorted(matching)}"


def test_a_saliency_runs_picture_loads_on_its_artifact_page(ui, tmp_path):
    from mlflow import MlflowClient

    from xaitk_exp.viz.figures import RED

    base, uri, log_path = ui
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("MLPClassifier - Saliency Map Generation")
    (run,) = client.search_runs([exp.experiment_id])
    rid = run.info.run_id
    url = f"{base}/#/experiments/{exp.experiment_id}/runs/{rid}/artifacts/{FIGURE}"
    page = browse(url, "--dump-dom")
    assert page.returncode == 0, page.stderr[-2000:]
    # the page shows the picture: an <img> of the artifact, whose bytes the browser fetched from the server
    assert f'<img alt="{FIGURE}" src="blob:{base}/' in page.stdout, page.stdout[-3000:]
    fetched = f"GET /get-artifact?path={FIGURE}&run_uuid={rid} HTTP/1.1\" 200"
    assert fetched in log_path.read_text()
    served = _get(f"{base}/get-artifact?{urllib.parse.urlencode({'path': FIGURE, 'run_uuid': rid})}")
    stored = Path(client.download_artifacts(rid, FIGURE, str(tmp_path))).read_bytes()
    assert served.startswith(PNG) and served == stored
    # and on screen: the legend's red swatch is drawn (the picture rendered, not a broken-image icon)
    shot = tmp_path / "artifact_page.png"
    page = browse(url, f"--screenshot={shot}", "--window-size=1600,1000")
    assert page.returncode == 0 and shot.exists(), page.stderr[-2000:]
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    red = (np.abs(pixels - np.array(RED)).max(axis=-1) <= 3).sum()
    assert red >= 50, f"the legend's red swatch is not on the screen ({red} pixels)"


def test_the_logged_models_page_lists_what_each_evaluation_measured(ui):
    """The README's promise: the train run's page lists its logged model, and that model's page (the train
    experiment's Models tab) lists the evaluation summary's metrics with their dataset and source run. MLflow 3.17
    lists no logged model on the page of a run that only uses one, so docs/records.md sends people to the model's
    page."""
    import mlflow
    from mlflow import MlflowClient

    base, uri, _ = ui
    client = MlflowClient(uri)
    train = client.get_experiment_by_name("MLPClassifier - Train")
    (run,) = client.search_runs([train.experiment_id])
    mlflow.set_tracking_uri(uri)
    (model,) = mlflow.search_logged_models(experiment_ids=[train.experiment_id], output_format="list")
    page = browse(f"{base}/#/experiments/{train.experiment_id}/runs/{run.info.run_id}", "--dump-dom")
    assert page.returncode == 0 and "Logged models (1)" in page.stdout, page.stderr[-2000:]
    page = browse(f"{base}/#/experiments/{train.experiment_id}/models/{model.model_id}", "--dump-dom")
    assert page.returncode == 0, page.stderr[-2000:]
    assert ">Accuracy<" in page.stdout and ">Evaluation_test_summary<" in page.stdout, page.stdout[-3000:]
