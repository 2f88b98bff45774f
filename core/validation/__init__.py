"""Scoring a bundle on a clinic's own labelled set: reading the set, label maps, the report."""
