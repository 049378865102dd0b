"""In-process aggregates of every finished span (``exphist``, ``aggregates``), the writer's stage
that feeds them (``stage``) and tail-based retention of full records (``retention``)."""
