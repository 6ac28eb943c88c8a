"""The host side input: host profiles (what one host offers), `cgsc probe` that records
them, and the checks of a launch plan against a profile."""
