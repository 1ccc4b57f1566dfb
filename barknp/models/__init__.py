"""The four networks of Bark: two causal GPTs, the non-causal fine GPT and the EnCodec decoder."""
