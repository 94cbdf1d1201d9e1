"""Operator command lines."""
