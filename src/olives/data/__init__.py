"""Data: sources (hub, local, synthetic), schema and ids, decoding, the uint8 cache, patient-level
splits, the batch loader, clinical features and the volume rule.

Names load on first use (`lazy_loader`), so importing one module of the package does not
import the others (nor their DVC dependencies)."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "cache": [
            "RawFile",
            "TooManyCorruptError",
            "build_cache",
            "duplicate_table",
            "list_raw",
            "open_cache",
            "open_image_file",
        ],
        "decode": ["DecodeError", "decode_grey", "load_scan", "resize", "to_uint8_grey"],
        "ids": ["normalise_id", "plain", "subject_component", "subject_from_path", "uniform"],
        "loader": [
            "Batch",
            "BatchSource",
            "SplitData",
            "batch_spans",
            "epoch_order",
            "gather",
            "load_splits",
            "to_unit_float",
            "use_device_cache",
        ],
        "prepare": [
            "DuplicateLeakError",
            "check_no_duplicate_leak",
            "clinical_features",
            "fill_clinical",
            "make_splits",
            "read_index",
            "read_stats",
            "train_statistics",
            "write_outputs",
        ],
        "schema": ["Columns", "SchemaError", "check_schema", "olives_features"],
        "shards": ["ShardWriter"],
        "sources": [
            "SourceError",
            "checked_row",
            "derive_patients",
            "describe_raw",
            "download",
            "features_for",
            "huggingface_rows",
            "imagefolder_rows",
            "local_rows",
            "parquet_rows",
            "write_splits",
        ],
        "splits": [
            "SplitError",
            "SplitLeakError",
            "assign_splits",
            "check_no_leak",
            "split_summary",
        ],
        "volumes": [
            "aggregate_volumes",
            "mixed_patients",
            "natural_key",
            "parquet_volume",
            "visit_of",
            "volume_ids",
            "volume_of",
        ],
    },
)
