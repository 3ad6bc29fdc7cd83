"""The record schema: every experiment, run, tag, metric and artifact name that users' scripts and saved queries
rely on (the seed notebook's names first). The README's "What a run records" table is checked against this module.

Nothing here imports anything: every room may use it.
"""

from __future__ import annotations

from collections.abc import Mapping

# ----- stages and levels ---------------------------------------------------------------------------------------------
STAGES = ("all", "train", "evaluation", "saliency", "reproduce")
LEVELS = ("high", "mid", "low")
#: what each logging level writes with (settings, conf/logging/, the level's module and the README say the same)
LEVEL_APIS = {
    "high": "flavour functions (mlflow.sklearn.log_model, mlflow.log_text) over the fluent API",
    "mid": "the fluent mlflow.* API",
    "low": "MlflowClient with explicit run ids, batched writes",
}
SQLITE_JOURNALS = ("wal", "delete")

# ----- experiments: "<Model class> - <suffix>" -----------------------------------------------------------------------
TRAIN = "Train"
EVALUATION = "Evaluation"
SALIENCY = "Saliency Map Generation"
EXPERIMENT_SUFFIXES = (TRAIN, EVALUATION, SALIENCY)


def experiment_name(model_class: str, suffix: str) -> str:
    """``MLPClassifier - Train`` and so on."""
    return f"{model_class} - {suffix}"


# ----- run names -------------------------------------------------------------------------------------------------------
TRAIN_RUN = "train_info"


def evaluation_image_run(image_id: int | str) -> str:
    return f"ImageID-{image_id}_conf"


def evaluation_summary_run(split: str) -> str:
    return f"Evaluation_{split}_summary"


def saliency_run(image_id: int | str) -> str:
    return f"ImageID-{image_id}_saliency_maps"


# ----- tags --------------------------------------------------------------------------------------------------------------
DATASET = "Dataset"
DATASPLIT = "Datasplit"
IMAGE_ID = "Image_id"
IMAGE_PATH = "Image_path"
GT_CLASS = "GT_class"
PREDICTED_CLASS = "Predicted_class"
PREDICTED_CLASS_INDEX = "Predicted_class_index"
PREDICTED_LABEL = "Predicted_label"  # an image model's class name (Predicted_class holds its index)
GT_LABEL = "GT_label"
MAP_CLASSES = "Map_classes"  # the classes of the saliency .npy's maps, in its order
TRAIN_EXP_ID = "Train_exp_id"
TRAIN_RUN_ID = "Train_run_id"
EVALUATION_EXP_ID = "Evaluation_exp_id"
EVALUATION_RUN_ID = "Evaluation_run_id"
# the evaluation summary an image run (and a saliency run) belongs to: image runs are top-level runs linked by this
# tag, so that the UI lists them for a typed query; stores written before nested them (PARENT_RUN_ID) instead
EVALUATION_SUMMARY_RUN_ID = "Evaluation_summary_run_id"
PARENT_RUN_ID = "mlflow.parentRunId"  # MLflow's nesting tag
SALIENCY_ALGORITHM = "Saliency_algorithm"
MODIFIED_RUN = "Modified_run"
RUN_TYPE = "Run_type"  # "summary" | "image" | "sweep"
CONFIG_HASH = "config_hash"
DATA_FINGERPRINT = "data_fingerprint"
GIT_COMMIT = "git_commit"
STAGE_TAG = "xaitk_exp.stage"
SWEEP_RUN_ID = "Sweep_run_id"
SHARD = "Shard"  # a sharded job's runs: "<k>/<N>", its share of the stage's images
SHARDS = "Shards"  # a sharded evaluation's summary: N, the shares its image runs were written in
SWEEP_EVALUATION_RUN_ID = "Sweep_evaluation_run_id"  # a sharded sweep's parent: the one evaluation summary it merged
TRIAL_NUMBER = "Trial_number"  # an optuna trial's number
REPRODUCED_FROM = "reproduced_from"
HOST = "Host"  # the machine whose process opened the run
PID = "Pid"  # that process's id
PROCESS = "Process"  # <boot id>:<pid namespace>:<start time>, so that a reused pid is not taken for the process
CLOSED_STALE = "Closed_stale"  # why a run left RUNNING by a dead process was closed KILLED
ERROR = "error"

# ----- metrics -----------------------------------------------------------------------------------------------------------
TRAIN_LOSS = "Train loss"
TRAIN_ACCURACY = "Train accuracy"
PREDICTED_CLASS_CONF = "Predicted_class_conf"
ACCURACY = "Accuracy"
ACCURACY_EVALUATED = "Accuracy_evaluated"  # classification summary: accuracy on the evaluated images only
MEAN_PREDICTED_CLASS_CONF = "Mean_predicted_class_conf"
EVALUATED_IMAGES = "Evaluated_images"  # any task's summary: image runs, and images in the split
SPLIT_IMAGES = "Split_images"


def shard_tag(shard: int, shards: int) -> str:
    """The ``Shard`` tag's value: ``"1/4"`` for the second of four shares."""
    return "/".join((str(shard), str(shards)))


def class_conf(label: object) -> str:
    return f"Class_{label}_conf"


# ----- object detection's evaluation (task=detection, tasks/detection.py) ---------------------------------------------
DETECTIONS = "Detections"  # an image run: how many detections the detector reported
MAX_SCORE = "Max_score"  # an image run: the best detection's score (0 without detections)
AP_50 = "AP_50"  # an image run with ground truth: its AP@0.5 (COCO, pycocotools)
AP_50_95 = "AP_50_95"  # per_class_ap.json: a class's AP@[.5:.95]
MAP_50 = "mAP_50"  # the summary: mAP@0.5 over the evaluated images
MAP_50_95 = "mAP_50_95"  # the summary: mAP@[.5:.95]
MEAN_DETECTIONS = "Mean_detections"  # the summary: detections per evaluated image
GT_OBJECTS = "GT_objects"  # an image run's tag: its ground-truth objects (with annotations)
DETECTED_LABELS = "Detected_labels"  # an image run's tag: its detections' class names, by decreasing score
DETECTIONS_TABLE = "detections.json"  # an image run: one row per detection (box, label, name, score)
DETECTIONS_FIGURE = "detections.png"  # an image run: the image with its boxes and labels (and ground truth)
CLASS_AP_TABLE = "per_class_ap.json"  # the summary: AP@0.5 and AP@[.5:.95] per class


def class_ap(label: object, iou: str = "50") -> str:
    """A summary's per-class AP metric: ``AP_50_<class>`` (AP@0.5) or ``AP_50_95_<class>``."""
    return f"AP_{iou}_{label}"


# ----- artifacts -------------------------------------------------------------------------------------------------------
MODEL_DIR = "sklearn-model"
NPY_DIR = "saliency_map_np_arrays"
MAPS_NPY = "saliency_maps.npy"
IMAGE_NPY = "image.npy"
SALIENCY_FIGURE = "Image_saliency_maps.png"
CONFIG_DIR = "config"
CONFUSION_FIGURE = "confusion_matrix.png"
CONFUSION_TABLE = "confusion_matrix.json"
SHARD_OUTPUTS_DIR = "shard_outputs"  # a sharded evaluation's summary: each shard's raw model outputs, for the merge


def shard_outputs_file(shard: int, shards: int) -> str:
    """The file (in :data:`SHARD_OUTPUTS_DIR`) holding shard ``shard``'s model outputs."""
    return f"shard-{shard}-of-{shards}.npz"

# ----- added for telling runs apart (descriptions, reuse by the work done) ---------------------------------------------
NOTE = "mlflow.note.content"  # the run's description in the MLflow UI (Markdown)
MODEL = "Model"  # the model's class, a column users can show or group by
WORK_HASH = "work_hash"  # saliency: evaluation + algorithm + metrics settings, whatever query selected the image
PREVIOUS_IMAGE_ID = "Previous_image_id"  # an edited saliency run: the image it showed before
PREVIOUS_EVALUATION_RUN_ID = "Previous_evaluation_run_id"
PREVIOUS_DETECTION = "Previous_detection"  # an edited detection saliency run: the detection it showed before

# ----- lineage MLflow shows natively (datasets, logged models, the registry, images) ---------------------------------
MODEL_SHA256 = "Model_sha256"  # an ONNX / PyTorch / MAITE model's identity: its file's SHA-256 (or its factory's)
MODEL_FORMAT = "Model_format"  # how the train run stored it: mlflow.onnx, mlflow.pytorch/torchscript|pt2, file, none
IMAGE_MODEL_DIR = "model"  # the train run's folder for an ONNX / PyTorch / MAITE model (an MLflow model when flavoured)
MODEL_VERSION = "Model_version"  # the registered model version a run used or registered
REGISTERED_MODEL = "Registered_model"  # the name of that registered model


# ----- detection saliency (task=detection): one saliency run per explained detection ---------------------------------
DETECTION = "Detection"  # the detection's index among its image's detections (the detector's order)
BOX = "Box"  # the detection's box, "x0,y0,x1,y1" in the original image's pixels
SCORE = "Score"  # metric: the detection's score (its label's)
DETECTION_FIGURE = "Detection_saliency_map.png"  # the image and the overlay of the map, the box drawn on both


def detection_saliency_run(image_id: int | str, detection: int | str) -> str:
    """``ImageID-<k>_det-<j>_saliency_maps``: the saliency run of detection ``j`` of image ``k``."""
    return f"ImageID-{image_id}_det-{detection}_saliency_maps"


def logged_model_name(model_class: str) -> str:
    """A train run's MLflow 3 logged model is named after the model's class. Not ``sklearn-model``: MLflow 3.17 lists
    a logged model's files under the run's same-named folder, and resolves them through the process-wide tracking
    URI, so ``MlflowClient(uri).list_artifacts(run_id, "sklearn-model")`` fails in a process pointed elsewhere."""
    return model_class


#: what MLflow refuses in a logged model's name, which is the model's name (``model.name``, a file's stem, a class)
MODEL_NAME_FORBIDDEN = ("/", ":", ".", "%", '"', "'")
#: a model's name heads its experiments' names (MLflow keeps at most 500 characters)
MODEL_NAME_MAX = 200


def model_name_rule() -> str:
    """What a model's name may be, for one-line errors."""
    return (f"a name without {' '.join(MODEL_NAME_FORBIDDEN)} or control characters, at most {MODEL_NAME_MAX} "
            "characters (MLflow names the logged model and the experiments '<name> - Train' ... after it)")


def model_name_ok(name: str) -> bool:
    """True when MLflow accepts ``name`` as the name of a logged model and as the head of experiment names."""
    return (0 < len(name.strip()) and len(name) <= MODEL_NAME_MAX and name.isprintable()
            and not any(c in name for c in MODEL_NAME_FORBIDDEN))


def saliency_image_key(algorithm: str) -> str:
    """The image key of a saliency run's picture (``mlflow.log_image``): one per algorithm, so that the UI compares
    the maps of one algorithm across runs."""
    return f"saliency/{algorithm}"


def trial_run_name(run_name: str, tags: Mapping[str, str]) -> str:
    """An optuna trial's runs carry its number in their names (``trial-3_train_info``), so that the runs of
    different trials (their evaluation summaries above all) are told apart in the UI."""
    trial = tags.get(TRIAL_NUMBER)
    prefix = f"trial-{trial}_"
    return run_name if trial in (None, "") or run_name.startswith(prefix) else prefix + run_name
