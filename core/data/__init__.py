"""Data: loading and cleaning, lesion-grouped splits, the metadata encoder, image transforms, download."""
