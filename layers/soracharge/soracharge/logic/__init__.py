"""Use cases: plain functions over models and adapter Protocols."""
