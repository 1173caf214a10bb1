"""The public functions, one module each, named like the function: count, run, gpus, sweep, report,
estimate, profile, measure. `flopbench` serves them lazily (`flopbench.count`, ...); the command line
only parses arguments, calls them and renders what they return."""
