"""Commands: the command line and what it runs (bench, paper, calibrate, sweep, plot, launcher)."""
