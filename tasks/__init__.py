"""One unit of work each, plain typed functions testable without Prefect, in the order the algorithm runs:

    data/          load-task-data: examples and seeded splits
    generation/    generate-instruction: soft prompt -> projection -> open LLM -> instruction
    evaluation/    zero-shot-evaluate: black-box scores, cost, budget, statistics
    optimisation/  GP-update and propose-prompt: kernel, surrogate, acquisition, selection

`prefect_tasks` wraps them as Prefect tasks (retries, caching) for `flows/`; `prompts` holds the text both the
generator and the black box see; `errors` the errors a user can act on.
"""
