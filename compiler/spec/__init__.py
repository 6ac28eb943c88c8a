"""Stage 1-3: load a spec (TOML, positions, `extends`), validate it against the schema,
and normalize it into the typed guest model."""
