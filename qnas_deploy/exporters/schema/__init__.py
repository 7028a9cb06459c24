"""Flatbuffer schemas the exporters write (see README.md here)."""
