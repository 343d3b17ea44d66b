"""xnetmap.report: a study's report files (Markdown, JSON, CSV, HTML with PNG heatmaps)."""

from xnetmap.report.terminal import format_matrix, format_table1
from xnetmap.report.writer import write_reports

__all__ = ["format_matrix", "format_table1", "write_reports"]
