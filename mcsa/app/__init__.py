"""The application layer: trace reading, replay and its fleet, golden-vector verification, mask quality."""
