"""Hybrid retrieval with the access filter inside the store query."""
