"""Linked vendor accounts, connectors and cost ingestion (see the connectors issue)."""
