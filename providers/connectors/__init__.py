"""Vendor connectors. Importing this package registers every vendor module."""

import importlib

for _module in ("openai", "anthropic", "azure", "openrouter", "deepseek", "csv_import"):
    try:
        importlib.import_module(f"providers.connectors.{_module}")
    except ModuleNotFoundError as exc:  # a vendor module not written yet
        if exc.name != f"providers.connectors.{_module}":
            raise
