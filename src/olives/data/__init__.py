"""Data sources, schema checks, decoding, the preprocess cache and patient-level splits."""
