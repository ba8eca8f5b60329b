"""Sensors: approved batches → submission runs."""
