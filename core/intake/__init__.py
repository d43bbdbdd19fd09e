"""Model intake: what an uploaded file is, loading it into torch, the zoo."""
