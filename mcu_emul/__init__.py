"""mcu_emul: a Transformer on a cluster of tiny MCUs, int8 and over real MPI."""
__version__ = "0.1.0"
