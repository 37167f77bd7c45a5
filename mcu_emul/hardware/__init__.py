"""The chip as hardware: cost functions, emulated clocks and counters, memory, placement."""
