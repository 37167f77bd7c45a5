"""Files in and out: weights, checkpoints, tokenizer, reports, traces, and safe output writing."""
