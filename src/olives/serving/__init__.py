"""Serving: a trained model on new scans: input readers, the `Predictor`, the `olives predict`
command and the MLflow pyfunc (`OlivesModel`, the name logged models import).

Names load on first use (`lazy_loader`), so importing one module of the package does not
import the others (nor their DVC dependencies)."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "locate": ["check_store", "downloaded", "model_file", "registered_name", "store_uri"],
        "predict": [
            "check_clinical_inputs",
            "chunks",
            "given_clinical",
            "model_card",
            "predict_all",
            "registered",
            "resolve_model",
            "run",
            "with_clinical",
            "write_overlays",
        ],
        "publish": [
            "architecture",
            "description",
            "log_model",
            "register_file",
            "request_help",
            "scores",
            "trained_on",
        ],
        "request": ["request_body"],
        "predictor": ["Decoded", "Predictor", "aggregate", "scan_volumes"],
        "guard": ["install_guards", "refuse_bad_table", "refuse_deep_json"],
        "pyfunc": [
            "OlivesModel",
            "RowError",
            "check_columns",
            "example",
            "image_bytes",
            "json_safe",
            "row_scan",
            "serve_root",
            "served_file",
            "signature",
            "table_of",
        ],
        "scans": [
            "Scan",
            "check_dicom_header",
            "clinical_error",
            "clinical_values",
            "dicom_scans",
            "image_scan",
            "imagefolder_scans",
            "number",
            "parquet_scans",
            "read_regular",
            "read_scans",
        ],
    },
)
