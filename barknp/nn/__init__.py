"""Array building blocks of the Bark transformers: layer norm, GELU, linear layers, attention."""
