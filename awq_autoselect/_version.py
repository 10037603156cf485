"""The version of awq_autoselect (one place; pyproject.toml must agree, a test checks)."""

__version__ = "0.2.0"
