"""Communication: point-to-point transports (MPI or in-process) and the all-reduce algorithms."""
