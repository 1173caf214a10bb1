"""The model: its configuration and choice lists (`config`), the named presets (`presets`), the Hugging
Face config.json reader (`hf`), the PyTorch module (`gpt`) and how a user's module is called (`inputs`)."""
