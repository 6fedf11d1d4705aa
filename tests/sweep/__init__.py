"""Tests for harness.sweep (a package so that test module names cannot collide)."""
