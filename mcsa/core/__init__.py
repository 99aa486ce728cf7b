"""The simulator: targets, expf, packets, masks, density and attention, bit for bit."""
