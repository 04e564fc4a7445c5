"""Retinal biomarker detection on OLIVES OCT B-scans."""

__version__ = "0.1.0"
