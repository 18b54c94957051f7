"""Pure DataFrame -> DataFrame functions: parsing, cleaning, dedup, weighting, id mapping, splits. Only pyspark."""
