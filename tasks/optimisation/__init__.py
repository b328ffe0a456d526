"""Stage 4, GP-update and propose-prompt: the search strategies (`proposer.Proposer`, by name in
`registry.PROPOSERS`), the instruction-coupled GP over soft prompts, its acquisition, and the rule that picks the
run's reported candidate."""
