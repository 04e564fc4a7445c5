"""Reporting: figures, tables and the Markdown/LaTeX report.

Names load on first use (`lazy_loader`), so importing one module of the package does not
import the others (nor their DVC dependencies)."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "ablation": [
            "cell_keys",
            "collect",
            "format_cells",
            "grid_tables",
            "mean_std",
            "write_ablation",
            "write_grid",
        ],
        "curves": ["report_curves"],
        "figures": [
            "curve_grid",
            "gallery",
            "image_gallery",
            "learning_curves",
            "save",
            "wrap_caption",
        ],
        "groups": ["arrays", "group_scores"],
        "inputs": [
            "ReportInputs",
            "check_columns",
            "label_title",
            "load_inputs",
            "need",
            "write_table",
        ],
        "operating": [
            "Bootstrap",
            "below_floor",
            "caveats",
            "confusion_counts",
            "fast_counts",
            "operating_point",
            "operating_points",
            "positive_patients",
            "rates",
        ],
        "report": [
            "build_report",
            "curves_section",
            "data_section",
            "data_summary_frame",
            "error_section",
            "gallery_figure",
            "header_section",
            "latex_section",
            "per_patient_lines",
            "worst_cases",
        ],
        "results": [
            "bootstrap_of",
            "calibration_frame",
            "calibration_lines",
            "caveat_lines",
            "compared_section",
            "floor_lines",
            "floor_note",
            "main_results_frame",
            "operating_frame",
            "scan_section",
            "visit_frame",
            "volume_section",
            "volume_table_of",
        ],
        "tables": ["fmt", "fmt_ci", "fmt_percent", "latex_escape", "latex_table", "markdown_table"],
        "teacher": [
            "METHODS",
            "collect_teacher",
            "estimates",
            "verdict",
            "verdicts",
            "write_teacher",
        ],
    },
)
