"""The dataset catalogue: what each TRE declares about its datasets, and its HDR UK export."""
