"""Issue 19, point 8: bad sizes, names MLflow refuses, image bombs, unwritable folders, a sweep with one bad job, a
tracking server that dies or whose disk fills, a full local disk: one line naming the key or the cause, exit 2,
nothing RUNNING, nothing already recorded lost."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import struct
import subprocess
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import exe, run_cli

from xaitk_exp.app import compose_config, run
from xaitk_exp.errors import ConfigError, DataError

def png_bomb(path: Path, side: int) -> Path:
    """A real 1-bit PNG of ``side`` x ``side`` black pixels: a few kB on disk, ``side**2`` pixels decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (side + 7) // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def small_folder(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in "ab":
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def no_runs(uri: str) -> bool:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


# ----- in process: the job refuses before any run opens ----------------------------------------------------------
@pytest.mark.parametrize("sizes", ["[0]", "[-3]", "[50,-1]", "[1.5]", "[a]"])
def test_hidden_layer_sizes_refused_before_any_run(tmp_path, sizes):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = compose_config([f"tracking.uri={uri}", "progress=false", "stage=train", f"model.hidden_layer_sizes={sizes}"])
    with pytest.raises(ConfigError, match=r"^model\.hidden_layer_sizes=.* is invalid: a list of positive integers"):
        run(cfg, [], tmp_path)
    assert no_runs(uri)


@pytest.mark.parametrize("name", ["a/b", "v1.2", "x:y", "50%", 'quo"te'])
def test_model_name_mlflow_refuses_is_one_line_before_any_run(tmp_path, name):
    from xaitk_exp.settings.validate import validate

    cfg = compose_config(["model=onnx", f"model.path={tmp_path / 'net.onnx'}", f"model.name='{name}'"])
    with pytest.raises(ConfigError, match=r"^model\.name=.* is invalid: a name without / : \. %") as info:
        validate(cfg)
    assert name in str(info.value) and "\n" not in str(info.value)
    validate(compose_config(["model=onnx", f"model.path={tmp_path / 'net.onnx'}", "model.name=resnet18_v2"]))


def test_model_file_stem_that_mlflow_refuses_asks_for_model_name(tmp_path):
    from xaitk_exp.settings.validate import validate

    stem = r"model\.name=None .*model\.path's file name 'resnet18\.v2'.*set model\.name"
    with pytest.raises(ConfigError, match=stem):
        validate(compose_config(["model=onnx", f"model.path={tmp_path / 'resnet18.v2.onnx'}"]))


@pytest.mark.parametrize("side", [10_000, 14_000], ids=["above-warning", "above-error"])
def test_decompression_bomb_is_one_line_naming_file_and_limit(tmp_path, side):
    from PIL import Image

    folder = small_folder(tmp_path / "photos")
    png_bomb(folder / "b" / "bomb.png", side)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = compose_config([f"tracking.uri={uri}", "progress=false", "stage=train", "dataset=image_folder",
                          f"dataset.path={folder}"])
    with pytest.raises(DataError) as info:
        run(cfg, [], tmp_path)
    message = str(info.value)
    assert "'b/bomb.png'" in message and f"{side * side} pixels" in message
    assert f"limit is {Image.MAX_IMAGE_PIXELS} pixels" in message and "\n" not in message
    assert no_runs(uri)


def test_huge_dataset_shape_is_refused_before_loading(tmp_path):
    folder = small_folder(tmp_path / "photos")
    cfg = compose_config([f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "progress=false", "stage=train",
                          "dataset=image_folder", f"dataset.path={folder}", "dataset.shape=[100000,100000]"])
    with pytest.raises(ConfigError, match=r"^dataset\.shape=\[100000, 100000\] is invalid: .*at most 8192 pixels"):
        run(cfg, [], tmp_path)


def test_memory_estimate_names_the_need_and_what_is_available():
    from xaitk_exp.data.bounds import check_memory

    check_memory("dataset.shape", [32, 32], 1000, (32, 32), 3)  # 74 MB: passes without asking the OS
    expected = (r"^dataset\.shape=\[8192, 8192\] is invalid: .*1000000 images of 8192x8192x3 need about \d+\.\d GB "
                r"while loading, \d+\.\d [GM]B is available")
    with pytest.raises(ConfigError, match=expected):
        check_memory("dataset.shape", [8192, 8192], 1_000_000, (8192, 8192), 3)


def test_mlp_whose_weights_cannot_fit_is_refused_before_training():
    from sklearn.neural_network import MLPClassifier

    from xaitk_exp.models.sklearn import check_fit_memory

    check_fit_memory(MLPClassifier(hidden_layer_sizes=(50,)), 64, 10)
    with pytest.raises(ConfigError, match=r"^model\.hidden_layer_sizes=\(50,\) is invalid: layers whose weights fit "
                                          r"in memory: 64000000 input features"):
        check_fit_memory(MLPClassifier(hidden_layer_sizes=(50,)), 64_000_000, 10)


@pytest.mark.parametrize(("value", "reason"), [("/etc/passwd/x", "is a file, not a folder"),
                                                ("/proc/x/${now:%H}", "No such file or directory")])
def test_unwritable_run_dir_is_one_line(value, reason):
    from xaitk_exp.cli import precheck_output_dir

    message = precheck_output_dir([f"hydra.run.dir={value}"])
    assert message is not None and message.startswith(f"hydra.run.dir={value!r} is invalid") and reason in message
    assert precheck_output_dir(["-m", f"hydra.sweep.dir={value}"]).startswith("hydra.sweep.dir=")
    assert precheck_output_dir([]) is None  # outputs/ under the working directory


# ----- failures met halfway: real exceptions, one line each -------------------------------------------------------
def test_full_disk_memory_and_dead_server_lines(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from xaitk_exp.failures import failure_line

    with pytest.raises(OSError) as full:  # a real ENOSPC
        with open("/dev/full", "w") as f:
            f.write("x")
    assert failure_line(full.value, "sqlite:///x.db").startswith("the disk is full: no space left on device")
    with pytest.raises(MemoryError) as memory:  # numpy refuses the allocation up front
        np.empty(2**50)
    assert failure_line(memory.value, None).startswith("out of memory: Unable to allocate")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    port = free_port()
    with pytest.raises(Exception) as dead:
        MlflowClient(f"http://127.0.0.1:{port}").create_run("0")
    line = failure_line(dead.value, f"http://bob:secret@127.0.0.1:{port}")
    assert line == (f"tracking.uri: the tracking server http://127.0.0.1:{port} stopped answering (connection "
                    "refused) when the job tried to create a run; what it recorded before is kept, and the run "
                    "open at that moment stays RUNNING on it")
    assert failure_line(ValueError("a bug"), None) is None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----- the installed command --------------------------------------------------------------------------------------
def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("xaitk-exp: error: ")]


@pytest.mark.slow
def test_cli_unwritable_run_dir_and_model_name(tmp_path):
    for args, pattern in [(["hydra.run.dir=/etc/passwd/x"], "hydra.run.dir='/etc/passwd/x' is invalid"),
                          (["model.hidden_layer_sizes=[0]", "stage=train"], "model.hidden_layer_sizes=[0] is invalid")]:
        proc = run_cli(["progress=false", *args], cwd=tmp_path, timeout=300)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert len(error_lines(proc)) == 1 and pattern in error_lines(proc)[0]


@pytest.mark.slow
def test_sweep_with_one_invalid_job(tmp_path):
    from mlflow import MlflowClient

    proc = run_cli(["-m", "progress=false", "stage=train", "model.max_iter=2", "model.learning_rate_init=0.01,-1"],
                   cwd=tmp_path, timeout=600)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Error executing job" not in proc.stderr, proc.stderr
    lines = error_lines(proc)
    assert lines[0].endswith("model.learning_rate_init=-1 is invalid: a float in the range (0.0, inf) (MLPClassifier)")
    assert lines[-1].startswith("xaitk-exp: error: sweep ") and "1 of 2 job(s) failed: #1 (" in lines[-1]
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    status = {r.data.tags.get("Run_type", r.info.run_name): r.info.status for r in runs}
    assert status == {"sweep": "FAILED", "train_info": "FINISHED"}, status
    parent = next(r for r in runs if r.data.tags.get("Run_type") == "sweep")
    assert "#1 (" in parent.data.tags["error"] and "learning_rate_init=-1" in parent.data.tags["error"]


def mount_tmpfs(folder: Path, size: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"a small tmpfs cannot be mounted here (root needed): {done.stderr.decode().strip()}")


@pytest.mark.slow
def test_local_artifact_disk_full(tmp_path):
    art = tmp_path / "art"
    mount_tmpfs(art, "64k")
    try:
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        proc = run_cli(["progress=false", "stage=train", f"tracking.uri={uri}", f"tracking.artifact_root={art}"],
                       cwd=tmp_path, timeout=300)
    finally:
        subprocess.run(["umount", str(art)], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = error_lines(proc)
    assert line.startswith(f"xaitk-exp: error: the disk is full: no space left on device writing {art}/")
    assert "tracking.artifact_root" in line
    rows = sqlite3.connect(tmp_path / "mlflow.db").execute("SELECT status FROM runs").fetchall()
    assert rows == [("FAILED",)]


@pytest.fixture
def server(tmp_path):
    """A real ``mlflow server`` (SQLite, no auth) on a free loopback port, its artifacts on a 64 kB tmpfs."""
    art = tmp_path / "server-artifacts"
    mount_tmpfs(art, "64k")
    port = free_port()
    mlflow = str(Path(exe()[0]).parent / "mlflow")
    proc = subprocess.Popen(
        [mlflow, "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination",
         str(art), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 400
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    pytest.fail("mlflow server did not start")
                time.sleep(0.5)
        yield {"port": port, "proc": proc, "db": tmp_path / "server.db", "art": art}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        subprocess.run(["umount", str(art)], check=False)


def server_runs(db: Path) -> list[tuple[str, str]]:
    return sorted(sqlite3.connect(db).execute("SELECT run_uuid, status FROM runs").fetchall())


@pytest.mark.slow
def test_server_disk_full_then_server_killed_mid_run(server, tmp_path):
    uri = f"http://127.0.0.1:{server['port']}"
    # 1. the server's artifact disk is full: every upload answers 500
    proc = run_cli(["progress=false", "stage=train", f"tracking.uri={uri}"], cwd=tmp_path, timeout=400)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = error_lines(proc)
    assert line.startswith(f"xaitk-exp: error: tracking.uri: the tracking server {uri} failed to store an artifact "
                           "(HTTP 500 to every try of ")
    assert "its artifact disk is most likely full" in line
    assert [s for _, s in server_runs(server["db"])] == ["FAILED"]
    # 2. room again; the server is killed once a few runs are written
    subprocess.run(["mount", "-o", "remount,size=50m", str(server["art"])], check=True)
    job = subprocess.Popen([*exe(), "progress=false", "force=true", f"tracking.uri={uri}"], cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    written: list[tuple[str, str]] = []
    while job.poll() is None and sum(s == "FINISHED" for _, s in written) < 3:
        time.sleep(0.3)
        written = server_runs(server["db"])
    os.killpg(server["proc"].pid, signal.SIGKILL)
    out, err = job.communicate(timeout=300)
    assert job.returncode == 2 and "Traceback" not in err, err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("xaitk-exp: error: ")]
    assert line.startswith(f"xaitk-exp: error: tracking.uri: the tracking server {uri} stopped answering (")
    after = dict(server_runs(server["db"]))
    assert all(after[run_id] == status for run_id, status in written if status == "FINISHED"), "a run was lost"
