"""What a federated evaluation sends, and how both sides read it (``insite coord evaluate``).

An evaluation scores models on every site's held-out cases without training. The coordinator
writes an evaluation request into the run folder (the models to score, each as a plain weights
file and the :class:`ModelSettings` of its network); the ServerApp sends each model to the sites in an
``evaluate.model`` message whose config holds those settings as JSON and the sliding-window edge.
A site builds the network from the settings with :func:`common.model.build_model`, exactly as it
builds the training model: nothing in a message is ever executed, and settings outside what a site
can build are refused by validation. ``evaluate.local_only`` asks each site to score the model it
trained alone at home (:mod:`client.local_only`); only its scores leave, named with
:data:`LOCAL_ONLY_PREFIX`. ``evaluate.personalised`` carries a model like ``evaluate.model``; each
site adapts it to its own training cases first (:mod:`client.personalise`), keeps the adapted
model, and sends only its scores, named with :data:`PERSONALISED_PREFIX`.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import ConfigRecord
from pydantic import Field

from common.errors import ConfigError
from common.settings import ModelSettings, RunSettings, TrainingSettings
from common.validation import StrictModel

#: The :class:`RunSettings` ``task`` that makes the ServerApp evaluate instead of train.
TASK = "evaluate"
EVALUATE_MODEL = "evaluate.model"
EVALUATE_LOCAL_ONLY = "evaluate.local_only"  # Flower: an action name is a Python identifier
EVALUATE_PERSONALISED = "evaluate.personalised"
MODEL_SETTINGS = "model-settings"
WINDOW = "window"
LOCAL_ONLY_PREFIX = "local-only-"
PERSONALISED_PREFIX = "personalised-"
#: Kinds of model a site scores in a message of their own: (message type, prefix of its scores).
SITE_KINDS = {
    "local-only": (EVALUATE_LOCAL_ONLY, LOCAL_ONLY_PREFIX),
    "personalised": (EVALUATE_PERSONALISED, PERSONALISED_PREFIX),
}
#: The scores a site reports for one model (an evaluate reply's metric names).
SCORES = ("num-examples", "dice", "hd95")
REQUEST = "evaluation-request.json"


class ModelToScore(StrictModel):
    """One model of a request: its name in the results, where it came from, and what a site builds."""

    name: str = Field(min_length=1)
    kind: str = Field(description="insite checkpoint | insite bundle | MONAI bundle | local-only | personalised")
    source: str
    weights: str = Field("", description="weights file (torch state dict); empty for local-only")
    model: ModelSettings = ModelSettings()
    window: int = Field(48, ge=16, description="sliding-window edge the sites infer with, voxels")


class EvaluationRequest(StrictModel):
    models: tuple[ModelToScore, ...] = Field(min_length=1)
    refused: dict[str, str] = Field(default_factory=dict, description="model -> why the coordinator refused it")


def write_request(run_dir: Path, request: EvaluationRequest) -> Path:
    path = run_dir / REQUEST
    path.write_text(request.model_dump_json(indent=1) + "\n", encoding="utf-8")
    return path


def read_request(run_dir: Path) -> EvaluationRequest:
    path = run_dir / REQUEST
    try:
        return EvaluationRequest.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no evaluation request; start evaluations with 'insite coord evaluate'") from None
    except ValueError as error:
        raise ConfigError(f"{path}: not a valid evaluation request ({error})") from None


def message_config(model: ModelToScore) -> ConfigRecord:
    return ConfigRecord({MODEL_SETTINGS: model.model.model_dump_json(), WINDOW: model.window})


def scoring_settings(settings: RunSettings, config: dict) -> RunSettings:
    """The run's settings with the network and sliding window of the model a message carries.

    Validated like any run setting: a message cannot make a site build anything but the UNet
    :class:`ModelSettings` describes.
    """
    try:
        model = ModelSettings.model_validate_json(str(config[MODEL_SETTINGS]))
        training = TrainingSettings.model_validate({**settings.training.model_dump(), "patch_size": config[WINDOW]})
    except (KeyError, ValueError) as error:
        raise ConfigError(f"evaluation message: model settings missing or invalid ({error})") from None
    return settings.model_copy(update={"model": model, "training": training})
