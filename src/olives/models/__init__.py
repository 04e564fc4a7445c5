"""Biomarker models: timm backbones (offline ImageNet weights) fused with clinical values."""

from olives.models.backbone import GreyInput, create_backbone, create_imagenet_model
from olives.models.bundle import BundleError, ModelBundle
from olives.models.fusion import BiomarkerNet, build_model, model_from_description
from olives.models.weights import WeightsUnavailableError

__all__ = [
    "BiomarkerNet",
    "BundleError",
    "GreyInput",
    "ModelBundle",
    "WeightsUnavailableError",
    "build_model",
    "create_backbone",
    "create_imagenet_model",
    "model_from_description",
]
