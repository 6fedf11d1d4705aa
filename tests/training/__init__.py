"""Tests for harness.training (a package so that test module names cannot collide)."""
