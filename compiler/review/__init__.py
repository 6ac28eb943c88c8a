"""What reviewers and CI read: explain, diff, diagnostic formats, completion."""
