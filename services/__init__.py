"""Likeness: one photo + a script + a voice -> a talking video."""
