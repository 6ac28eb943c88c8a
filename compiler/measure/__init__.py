"""The measure side input: read the boot files a spec's [measurement] names, parse the
firmware formats, and compute what the attestation report will say."""
