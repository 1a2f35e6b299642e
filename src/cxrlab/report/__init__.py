"""Results tables, figures, run comparisons and the Markdown/HTML report (tasks A to E, and what transferred)."""
