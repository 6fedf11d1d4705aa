"""Tests for harness.analysis (a package so that test module names cannot collide)."""
