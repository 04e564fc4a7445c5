"""Training: the supervised loop, contrastive pre-training, losses, batch augmentation,
clinical dropout, resumable checkpoints and pseudo-labels (soft targets) for distillation.

Names load on first use (`lazy_loader`), so importing one module of the package does not
import the others (nor their DVC dependencies)."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "augment": ["BatchAugment", "same_device"],
        "checkpoint": ["Checkpoint", "TrainState", "fingerprint"],
        "clinical_dropout": ["ClinicalDropout", "clinical_fill"],
        "contrastive": [
            "ContrastiveConfigError",
            "ContrastiveLoss",
            "GatherWithGradient",
            "ProjectionHead",
            "anchor_scans",
            "clinical_loss",
            "global_views",
            "label_codes",
            "positive_codes",
            "supcon_loss",
        ],
        "distill": [
            "PseudoLabelError",
            "confidence",
            "eligible_rows",
            "pseudo_labels",
            "with_pseudo_rows",
        ],
        "loop": [
            "InitialLossError",
            "Loop",
            "TrainResult",
            "batch_loss",
            "build_loop",
            "check_initial_loss",
            "configure_torch",
            "fit",
            "format_record",
            "freeze_backbone",
            "make_scheduler",
            "steps_per_epoch",
            "train_epoch",
            "train_mode",
            "train_step",
            "update_state",
            "use_fp16",
            "validate",
        ],
        "losses": [
            "AsymmetricLoss",
            "BCELoss",
            "FocalLoss",
            "build_loss",
            "expected_initial_loss",
            "resolve_alpha",
            "resolve_pos_weight",
        ],
        "pretrain": [
            "Encoder",
            "PretrainResult",
            "TwoViews",
            "codes_as_split",
            "pretrain",
        ],
    },
)
