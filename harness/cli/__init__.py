"""Thin commands: parse arguments, call a workflow, print, exit code."""
