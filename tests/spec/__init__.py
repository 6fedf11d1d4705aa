"""Tests for harness.spec (a package so that test module names cannot collide)."""
