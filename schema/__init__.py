"""JSON Schema files for the cgsc guest spec (data only; see cgsc.spec.validate)."""
