"""Model blocks (TinyLlama, MobileBERT), what each chip stores, and the partition plan."""
