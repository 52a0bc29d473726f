"""Typed, validated configuration loaded from YAML with dotted command-line overrides."""
