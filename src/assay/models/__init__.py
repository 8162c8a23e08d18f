"""Models (config group ``model``): policy and tokenizer from a config, the Hub, a local path or GGUF."""
