"""What a user reads: result files (CSV, JSON), plots, one self-contained HTML report, and text summaries."""
