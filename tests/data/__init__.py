"""Tests for harness.data (a package so that test module names cannot collide)."""
