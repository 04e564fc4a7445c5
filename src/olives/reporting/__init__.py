"""Figures, tables and the Markdown/LaTeX report."""
