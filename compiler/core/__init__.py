"""What every stage shares and no stage owns: diagnostics, the rule catalogue, the escapers."""
