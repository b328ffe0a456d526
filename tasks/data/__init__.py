"""Stage 1, load-task-data: a task's examples (from files or built in) and its seeded exemplar/dev/test splits."""
