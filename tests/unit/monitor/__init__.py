"""Monitor unit tests: pure computations, rendering, the lag collector."""
