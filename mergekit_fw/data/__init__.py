"""Calibration sets: files read through `datasets`, tokenized, and batched for the objectives."""
