"""Chaos harness: many monthly cycles end to end under moto and the simulators, with faults from a seed."""
