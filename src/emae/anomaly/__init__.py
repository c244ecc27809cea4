"""Anomaly maps and scores: error maps, statistics of normal data, thresholds, detectors."""
