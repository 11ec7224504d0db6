"""Static leaderboard site built from the store (arrives with issue 5; nothing here yet)."""
