"""The two JSON configs of the MONAI bundle: ``metadata.json`` and ``inference.json``.

``inference.json`` is plain MONAI (no ignite, which insite does not install): it loads every NIfTI
volume in ``dataset_dir``, normalises it per volume to zero mean and unit variance exactly as the
sites did in training, runs a sliding-window UNet over it and writes the argmax label map to
``output_dir``. Run it with ``python -m monai.bundle run --config_file configs/inference.json
--bundle_root BUNDLE --dataset_dir IN --output_dir OUT``.
"""

from __future__ import annotations

from typing import Any

import monai
import nibabel
import numpy
import torch

from common.model import spatial_multiple
from common.settings import RunSettings
from publication.layout import SCHEMA_URL
from publication.manifest.schema import Manifest

NETWORK_ID = "network_def"


def network_def(settings: RunSettings) -> dict[str, Any]:
    """The same UNet as :func:`common.model.build_model`, as a MONAI config component."""
    model = settings.model
    return {
        "_target_": "monai.networks.nets.UNet",
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": model.out_channels,
        "channels": list(model.channels),
        "strides": list(model.strides),
        "num_res_units": model.num_res_units,
    }


def roi_size(settings: RunSettings) -> int:
    """Sliding-window edge: the training patch, rounded down to a multiple the UNet accepts."""
    multiple = spatial_multiple(settings.model)
    return max(multiple, settings.training.patch_size // multiple * multiple)


def inference_config(settings: RunSettings) -> dict[str, Any]:
    roi = roi_size(settings)
    return {
        "imports": ["$import glob", "$import torch"],
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "dataset_dir": "$@bundle_root + '/sample'",
        "output_dir": "$@bundle_root + '/eval'",
        "datalist": "$sorted(glob.glob(@dataset_dir + '/*.nii*'))",
        NETWORK_ID: network_def(settings),
        "network": f"$@{NETWORK_ID}.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image", "image_only": True},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {"_target_": "NormalizeIntensityd", "keys": "image"},
                {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"},
            ],
        },
        "dataset": {"_target_": "Dataset", "data": "$[{'image': f} for f in @datalist]", "transform": "@preprocessing"},
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": [roi, roi, roi],
            "sw_batch_size": 1,
            "overlap": 0.25,
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                {
                    "_target_": "SaveImaged",
                    "keys": "pred",
                    "output_dir": "@output_dir",
                    "output_postfix": "seg",
                    "output_dtype": "$numpy.uint8",
                    "resample": False,
                    "separate_folder": False,
                },
            ],
        },
        "predict": "$lambda item: @postprocessing("
        "{**item, 'pred': @inferer(item['image'][None].to(@device), @network)[0]})",
        "initialize": [
            "$torch.set_grad_enabled(False)",
            "$@network.load_state_dict(torch.load(@bundle_root + '/models/model.pt', "
            "map_location=@device, weights_only=True))",
            "$@network.eval()",
        ],
        "run": ["$[@predict(item) for item in @dataset]"],
    }


def metadata(
    manifest: Manifest, settings: RunSettings, record: dict[str, Any], eval_metrics: dict[str, float]
) -> dict[str, Any]:
    """``configs/metadata.json``, valid against MONAI's bundle schema 20240725."""
    project = manifest.project
    shape = [roi_size(settings)] * 3  # the network sees sliding-window patches of this size
    classes = {str(index): name for index, name in enumerate(project.label_classes)}
    described = ", ".join(f"{index}: {name}" for index, name in classes.items())
    return {
        "schema": SCHEMA_URL,
        "version": project.version,
        "changelog": {
            project.version: f"consensus model of federated run '{record['name']}', "
            f"round {manifest.run.round}, exported by insite"
        },
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "required_packages_version": {"nibabel": nibabel.__version__},
        "task": project.task,
        "description": project.description,
        "authors": ", ".join(project.authors),
        "copyright": project.copyright,
        "data_type": "nibabel",
        "image_classes": "single-channel volume, normalised per volume to zero mean, unit variance",
        "label_classes": described,
        "pred_classes": described,
        "eval_metrics": eval_metrics,
        "intended_use": project.intended_use,
        "references": [],
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "unspecified",
                    "num_channels": 1,
                    "spatial_shape": shape,
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": {"0": "image"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": settings.model.out_channels,
                    "spatial_shape": shape,
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": classes,
                }
            },
        },
    }
