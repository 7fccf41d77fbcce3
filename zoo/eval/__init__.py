"""Metric kernels (matched SI-SDR, BSS Eval v4 and its summaries): below the system, never
importing it or the run layer."""
