"""Write a small dataset into scikit-learn's OpenML cache layout, so ``fetch_openml`` reads it with no network.

The layout mirrors the OpenML API paths scikit-learn caches (gzip files under ``<data_home>/openml/openml.org``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np

DATA_ID = 554
FILE_ID = 52667


def _write(root: Path, rel: str, payload: bytes) -> None:
    path = root / "openml" / "openml.org" / (rel + ".gz")
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as fh:
        fh.write(payload)


def write_openml_cache(data_home: Path, name: str, X: np.ndarray, y: np.ndarray) -> None:
    """Cache ``X`` (``[N, D]`` numbers) and string labels ``y`` as OpenML dataset ``name`` version 1."""
    classes = sorted({str(v) for v in y})
    lines = [f"@RELATION {name}", ""]
    lines += [f"@ATTRIBUTE pixel{i + 1} NUMERIC" for i in range(X.shape[1])]
    lines += ["@ATTRIBUTE class {" + ",".join(classes) + "}", "", "@DATA"]
    lines += [",".join(str(int(v)) for v in row) + f",{label}" for row, label in zip(X, y, strict=True)]
    arff = ("\n".join(lines) + "\n").encode()
    url = f"https://www.openml.org/data/v1/download/{FILE_ID}/{name}.arff"
    listing = {"data": {"dataset": [{"did": DATA_ID, "name": name, "version": 1, "status": "active", "format": "ARFF"}]}}
    description = {
        "data_set_description": {
            "id": str(DATA_ID), "name": name, "version": "1", "status": "active", "format": "ARFF",
            "url": url, "file_id": str(FILE_ID), "default_target_attribute": "class",
            "md5_checksum": hashlib.md5(arff).hexdigest(),
        }
    }
    feature = {"is_target": "false", "is_ignore": "false", "is_row_identifier": "false", "number_of_missing_values": "0"}
    features = [{"index": str(i), "name": f"pixel{i + 1}", "data_type": "numeric", **feature} for i in range(X.shape[1])]
    features.append({
        "index": str(X.shape[1]), "name": "class", "data_type": "nominal", "nominal_value": classes,
        **{**feature, "is_target": "true"},
    })
    qualities = {"data_qualities": {"quality": [{"name": "NumberOfInstances", "value": str(float(len(X)))}]}}
    _write(data_home, f"api/v1/json/data/list/data_name/{name}/limit/2/data_version/1", json.dumps(listing).encode())
    _write(data_home, f"api/v1/json/data/{DATA_ID}", json.dumps(description).encode())
    _write(data_home, f"api/v1/json/data/features/{DATA_ID}", json.dumps({"data_features": {"feature": features}}).encode())
    _write(data_home, f"api/v1/json/data/qualities/{DATA_ID}", json.dumps(qualities).encode())
    _write(data_home, f"data/v1/download/{FILE_ID}/{name}.arff", arff)
