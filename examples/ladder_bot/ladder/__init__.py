"""EvoLadder: a competitive 1v1 ladder bot (the autoperf example; it knows nothing about autoperf)."""
