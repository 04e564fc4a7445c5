"""Evaluation: multi-label metrics with patient-bootstrap intervals, calibration, VIP Cup
scoring and the comparison of MLflow runs.

Names load on first use (`lazy_loader`), so importing one module of the package does not
import the others (nor their DVC dependencies)."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "calibration": [
            "calibrated",
            "calibration_table",
            "expected_calibration_error",
            "fit_temperatures",
        ],
        "compare": ["CompareError", "compare_runs", "differing_params", "write_tables"],
        "paired": ["Paired", "holm", "paired_comparisons", "paired_interval"],
        "intervals": [
            "BootstrapCI",
            "bootstrap_ci",
            "bootstrap_metrics",
            "bootstrap_replicates",
            "draw_patients",
            "evaluate_predictions",
            "percentile_interval",
        ],
        "metrics": [
            "curve_tables",
            "image_f1_scores",
            "per_label_metrics",
            "summary_metrics",
            "tune_thresholds",
            "vip_phase1",
            "vip_phase2",
        ],
        "scoring": [
            "ScoreError",
            "ScoreResult",
            "normalise_path",
            "patient_from_path",
            "read_vip_csv",
            "score_files",
        ],
        "volumes": ["volume_metrics"],
    },
)
