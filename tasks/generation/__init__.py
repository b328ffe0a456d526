"""Stage 2, generate-instruction: soft prompt z -> random projection -> soft tokens + exemplars -> open LLM ->
instruction, with the packaged models resolved offline."""
