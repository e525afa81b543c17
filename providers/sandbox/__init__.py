"""Local HTTP servers that speak each vendor's documented billing API, quirks included.

Tests use them over real loopback HTTP; the offline demo links one account per vendor to them.
"""
