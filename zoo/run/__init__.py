"""How things run: recipes, the one build path, run folders, results, evaluation, export,
separation of files and the leaderboard (the layer above the system; the CLI only parses)."""
