"""Tests for selflengthen.prompts."""
