"""Stage 3, zero-shot-evaluate: the black box scores an instruction on dev or test examples; what it costs, the
budget that bounds it, and the statistics that compare instructions on the same examples."""
