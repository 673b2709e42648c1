"""What the project writes about a run's outcome, by kind: tables, figures, Markdown, JSON,
the paper's reference values and a run's kind (read from its saved config)."""
