"""Evaluation: results files written from test runs."""
