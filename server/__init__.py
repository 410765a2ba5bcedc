"""Bastion: an MCP server that governs what AI agents do with production databases."""

__version__ = "0.1.0"
