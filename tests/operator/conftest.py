"""Fixtures for the operator tests (defined in op_live, which mypy checks; see pyproject.toml)."""

from op_live import live_cluster

__all__ = ["live_cluster"]
