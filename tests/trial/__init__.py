"""Tests for harness.trial (a package so that test module names cannot collide)."""
