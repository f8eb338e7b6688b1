"""Shared types, errors and configuration."""
