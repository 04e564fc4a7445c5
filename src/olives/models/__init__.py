"""Models: timm backbones (offline ImageNet weights) fused with clinical values, the model file
(`ModelBundle`), ensembles of trained models as one model file, batched inference and Grad-CAM.

Names load on first use (`lazy_loader`), so importing one module of the package does not
import the others (nor their DVC dependencies)."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "backbone": [
            "GreyInput",
            "backbone_input",
            "create_backbone",
            "create_imagenet_model",
            "data_config_for",
            "is_vit",
            "parse_pretrained",
        ],
        "bundle": ["BundleError", "ModelBundle"],
        "combine": ["check_members", "combine"],
        "ensemble": ["EnsembleNet", "Member", "ensemble_from_description", "is_ensemble"],
        "fusion": ["BiomarkerNet", "ClinicalMLP", "FiLM", "build_model", "model_from_description"],
        "gradcam": [
            "annotated_overlay",
            "empty_reason",
            "grad_cam",
            "overlay",
            "scan_view",
            "target_layer",
            "title_strip",
        ],
        "inference": [
            "TTA_VIEWS",
            "autocast",
            "predict",
            "predict_logits",
            "shift_width",
            "tta_views",
            "view_logits",
        ],
        "weights": [
            "WeightsUnavailableError",
            "encoder_metadata",
            "load_encoder",
            "load_package_weights",
            "load_vit_checkpoint",
            "map_efficientnet_pytorch_keys",
            "map_vit_keys",
            "package_weights_path",
            "vit_state",
        ],
    },
)
