"""In-process aggregates of every finished span: exponential histograms (``exphist``)."""
