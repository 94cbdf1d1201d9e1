"""Checks of the deployment: Terraform, packaging of the functions."""
