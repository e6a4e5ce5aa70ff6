"""`editforge edit | t2i | fuse | doctor`."""
