"""Measurements: each returns tidy rows and knows nothing of report formatting."""
