"""Predictions from sale lines, pure: numpy and scipy only (see docs/INSIGHT.md)."""
