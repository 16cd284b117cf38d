"""Tests of the metadata store (a package, so its conftest is not the top-level one)."""
