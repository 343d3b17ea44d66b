"""xnetmap.report: a study's report files (Markdown, JSON, CSV, LaTeX, HTML) and figures."""

from xnetmap.report.terminal import format_matrix, format_table1
from xnetmap.report.wording import loss_reading, pair_reading
from xnetmap.report.writer import write_reports

__all__ = ["format_matrix", "format_table1", "loss_reading", "pair_reading", "write_reports"]
