"""Representation estimators."""
