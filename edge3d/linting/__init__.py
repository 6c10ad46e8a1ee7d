"""The rank lint and its report formats."""

from .rank import LintResult, lint_file, lint_model

__all__ = ["LintResult", "lint_file", "lint_model"]
