"""Vendor connectors. Importing this package registers every vendor module."""

from providers.connectors import anthropic, azure, deepseek, file_import, openai, openrouter

__all__ = ["anthropic", "azure", "deepseek", "file_import", "openai", "openrouter"]
